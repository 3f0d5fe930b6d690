//! A small blocking downloader: resume with `Range` from a `.part` file, size check
//! against `Content-Length`/`Content-Range`, retries with backoff on transient errors,
//! rename to the final name only when complete.
//!
//! Symbolic links are never followed when writing: a `.part` or destination path that is a
//! symlink (or a directory, FIFO, device) is refused with
//! [`DownloadError::NotARegularFile`] naming it, and left as it is. A new `.part` is created
//! exclusively (`O_EXCL`), an existing one opened with `O_NOFOLLOW` and checked to be a
//! regular file, so a link planted in the download folder cannot redirect the bytes into a
//! file elsewhere.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{retried_suffix, DownloadError};
use crate::progress::{FileProgress, Reporter};

/// Settings of the HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
}

/// A blocking HTTP client for plain file downloads.
pub(crate) struct Http {
    agent: ureq::Agent,
    settings: HttpSettings,
}

/// How one attempt failed.
enum Failure {
    /// Worth another try (5xx, reset, read timeout, closed early); bytes on disk are kept.
    Transient(String, Option<u16>),
    /// Not worth another try.
    Fatal(Box<DownloadError>),
}

impl Failure {
    fn fatal(err: DownloadError) -> Self {
        Failure::Fatal(Box::new(err))
    }
}

/// What the server answered.
enum Answer {
    /// A body to write from `offset`.
    Body(Body),
    /// 416 and the `.part` already holds the whole file.
    Complete,
    /// 416 and the `.part` is not a prefix the server accepts: start over.
    Unsatisfiable,
}

/// The bytes the server sends.
struct Body {
    /// Bytes of the whole file, when the server said.
    total: Option<u64>,
    /// Where the body starts in the file.
    offset: u64,
    reader: Box<dyn Read + Send + Sync + 'static>,
}

impl Http {
    pub(crate) fn new(settings: HttpSettings) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(settings.connect_timeout)
            .timeout_read(settings.read_timeout)
            .try_proxy_from_env(true)
            .user_agent(concat!("gpt2-rs/", env!("CARGO_PKG_VERSION")))
            .build();
        Http { agent, settings }
    }

    /// Downloads `url` to `dest` unless `dest` already exists (a complete file from an
    /// earlier run). Bytes go to `dest.part` first; a `.part` left by an interrupted run
    /// is resumed with a `Range` request. Returns the number of bytes of the file.
    pub(crate) fn download(
        &self,
        url: &str,
        dest: &Path,
        label: &str,
        reporter: &Reporter,
    ) -> Result<u64, DownloadError> {
        if let Some(meta) = regular_or_absent(dest)? {
            return Ok(meta.len());
        }
        let part = part_path(dest);
        let mut progress = reporter.file(label);
        let mut attempt = 0u32;
        loop {
            match self.attempt(url, &part, &mut progress) {
                Ok(len) => {
                    progress.finish();
                    // Something may have appeared at `dest` meanwhile: replace only a file.
                    regular_or_absent(dest)?;
                    fs::rename(&part, dest).map_err(|e| DownloadError::io("renaming", &part, e))?;
                    return Ok(len);
                }
                Err(Failure::Transient(message, _)) if attempt < self.settings.retries => {
                    attempt += 1;
                    let delay = self.settings.retry_delay * 2u32.saturating_pow(attempt - 1);
                    progress.abandon();
                    reporter.say(format!(
                        "{label}: {message}; retry {attempt}/{} in {:.1}s",
                        self.settings.retries,
                        delay.as_secs_f64()
                    ));
                    std::thread::sleep(delay);
                }
                Err(Failure::Transient(message, status)) => {
                    progress.abandon();
                    let retried = retried_suffix(attempt);
                    return Err(match status {
                        Some(status) => DownloadError::HttpStatus {
                            url: url.to_string(),
                            status,
                            reason: message,
                            retried,
                        },
                        None => DownloadError::Transfer {
                            url: url.to_string(),
                            received: fs::symlink_metadata(&part).map(|m| m.len()).unwrap_or(0),
                            retried,
                            message,
                        },
                    });
                }
                Err(Failure::Fatal(err)) => {
                    progress.abandon();
                    return Err(*err);
                }
            }
        }
    }

    /// One request: from the end of `part` to the end of the file.
    fn attempt(&self, url: &str, part: &Path, progress: &mut FileProgress) -> Result<u64, Failure> {
        let have = regular_or_absent(part)
            .map_err(Failure::fatal)?
            .map_or(0, |m| m.len());
        let body = match self.request(url, have)? {
            Answer::Body(body) => body,
            Answer::Complete => return Ok(have),
            Answer::Unsatisfiable => {
                fs::remove_file(part)
                    .map_err(|e| Failure::fatal(DownloadError::io("removing", part, e)))?;
                return Err(Failure::Transient(
                    format!(
                        "the server refused to resume at byte {have} (HTTP 416); starting over"
                    ),
                    None,
                ));
            }
        };
        let mut file = open_part(part, body.offset > 0).map_err(Failure::fatal)?;

        progress.start(body.total, body.offset);
        let mut written = body.offset;
        let mut reader = body.reader;
        let mut buf = vec![0u8; 256 * 1024];
        let outcome = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = file.write_all(&buf[..n]) {
                        break Err(Failure::fatal(DownloadError::io("writing", part, e)));
                    }
                    written += n as u64;
                    progress.inc(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Failure::Transient(format!("reading the body: {e}"), None)),
            }
        };
        // Keep what arrived, even when the transfer broke: the next attempt resumes from it.
        file.flush()
            .and_then(|()| file.sync_all())
            .map_err(|e| Failure::fatal(DownloadError::io("writing", part, e)))?;
        drop(file);
        outcome?;

        match body.total {
            Some(total) if written < total => Err(Failure::Transient(
                format!("connection closed after {written} of {total} bytes"),
                None,
            )),
            Some(total) if written > total => {
                let _ = fs::remove_file(part);
                Err(Failure::fatal(DownloadError::SizeMismatch {
                    file: part.to_path_buf(),
                    expected: total,
                    found: written,
                }))
            }
            _ => Ok(written),
        }
    }

    /// Sends the GET (with `Range` when `have > 0`) and classifies the answer.
    fn request(&self, url: &str, have: u64) -> Result<Answer, Failure> {
        let mut req = self.agent.get(url);
        if have > 0 {
            req = req.set("Range", &format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(resp) => resp,
            Err(ureq::Error::Status(416, resp)) if have > 0 => {
                // "bytes */TOTAL": is what we have the whole file?
                let total = resp
                    .header("Content-Range")
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if total == Some(have) {
                    return Ok(Answer::Complete);
                }
                return Ok(Answer::Unsatisfiable);
            }
            Err(ureq::Error::Status(404, _)) => {
                return Err(Failure::fatal(DownloadError::NotFound {
                    url: url.to_string(),
                }))
            }
            Err(ureq::Error::Status(code, resp)) => {
                let reason = resp.status_text().to_string();
                if code >= 500 || code == 408 || code == 429 {
                    return Err(Failure::Transient(reason, Some(code)));
                }
                return Err(Failure::fatal(DownloadError::HttpStatus {
                    url: url.to_string(),
                    status: code,
                    reason,
                    retried: String::new(),
                }));
            }
            Err(ureq::Error::Transport(t)) => return Err(classify_transport(url, &t)),
        };

        let content_length = resp
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        match resp.status() {
            206 => {
                let range = resp.header("Content-Range").unwrap_or_default().to_string();
                let (start, end, total) = parse_content_range(&range).ok_or_else(|| {
                    Failure::fatal(DownloadError::BadResponse {
                        url: url.to_string(),
                        message: format!(
                            "HTTP 206 with Content-Range {range:?}, expected \"bytes START-END/TOTAL\""
                        ),
                    })
                })?;
                if start != have || end < start {
                    return Err(Failure::fatal(DownloadError::BadResponse {
                        url: url.to_string(),
                        message: format!("asked for bytes {have}- but got Content-Range {range:?}"),
                    }));
                }
                if let Some(len) = content_length {
                    if len != end - start + 1 {
                        return Err(Failure::fatal(DownloadError::BadResponse {
                            url: url.to_string(),
                            message: format!(
                                "Content-Length {len} does not match Content-Range {range:?}"
                            ),
                        }));
                    }
                }
                Ok(Answer::Body(Body {
                    total: total.or(Some(end + 1)),
                    offset: have,
                    reader: resp.into_reader(),
                }))
            }
            // A full answer (also when the server ignores Range): start from byte 0.
            _ => Ok(Answer::Body(Body {
                total: content_length,
                offset: 0,
                reader: resp.into_reader(),
            })),
        }
    }
}

/// What is at `path`: `None` when nothing, its metadata when a regular file (symlinks not
/// followed), else [`DownloadError::NotARegularFile`].
fn regular_or_absent(path: &Path) -> Result<Option<fs::Metadata>, DownloadError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Some(meta)),
        Ok(meta) => Err(DownloadError::NotARegularFile {
            path: path.to_path_buf(),
            found: kind_of(&meta.file_type()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DownloadError::io("checking", path, e)),
    }
}

/// `a symbolic link`, `a directory`... for messages.
fn kind_of(t: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "something other than a regular file"
    }
}

/// Opens `part` for writing without following a symlink: to append to (`resume`), it must be
/// a regular file already; otherwise whatever regular file is there is removed and a new one
/// created exclusively. Anything else at `part` is [`DownloadError::NotARegularFile`].
fn open_part(part: &Path, resume: bool) -> Result<File, DownloadError> {
    if !resume && regular_or_absent(part)?.is_some() {
        fs::remove_file(part).map_err(|e| DownloadError::io("removing", part, e))?;
    }
    let mut opts = OpenOptions::new();
    if resume {
        opts.append(true);
    } else {
        opts.write(true).create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Not a symlink; and a FIFO planted meanwhile must not block the open.
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = opts.open(part).map_err(|e| {
        // ELOOP (a symlink, with O_NOFOLLOW) or EEXIST (something appeared since the check).
        match fs::symlink_metadata(part) {
            Ok(meta) if !meta.is_file() => DownloadError::NotARegularFile {
                path: part.to_path_buf(),
                found: kind_of(&meta.file_type()),
            },
            _ => DownloadError::io("opening", part, e),
        }
    })?;
    let meta = file
        .metadata()
        .map_err(|e| DownloadError::io("opening", part, e))?;
    if !meta.is_file() {
        return Err(DownloadError::NotARegularFile {
            path: part.to_path_buf(),
            found: kind_of(&meta.file_type()),
        });
    }
    Ok(file)
}

/// `dest` + `.part`.
pub(crate) fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

/// Connection refused, DNS failure, connect timeout: fail fast. Other transport errors
/// (reset, broken pipe, read timeout) are worth a retry.
fn classify_transport(url: &str, t: &ureq::Transport) -> Failure {
    if is_unreachable(t) {
        Failure::fatal(DownloadError::Unreachable {
            url: url.to_string(),
            message: transport_message(t),
        })
    } else {
        Failure::Transient(transport_message(t), None)
    }
}

/// A transport error without its URL (the messages name the URL themselves):
/// `Connection Failed: Connect error: Connection refused (os error 111)`.
pub(crate) fn transport_message(t: &ureq::Transport) -> String {
    let mut msg = t.kind().to_string();
    if let Some(m) = t.message() {
        msg.push_str(": ");
        msg.push_str(m);
    }
    if let Some(source) = std::error::Error::source(t) {
        msg.push_str(": ");
        msg.push_str(&source.to_string());
    }
    msg
}

/// True for transport errors that mean "the server cannot be reached at all".
pub(crate) fn is_unreachable(t: &ureq::Transport) -> bool {
    matches!(
        t.kind(),
        ureq::ErrorKind::Dns
            | ureq::ErrorKind::ConnectionFailed
            | ureq::ErrorKind::ProxyConnect
            | ureq::ErrorKind::InvalidUrl
            | ureq::ErrorKind::UnknownScheme
            | ureq::ErrorKind::InvalidProxyUrl
            | ureq::ErrorKind::ProxyUnauthorized
            | ureq::ErrorKind::InsecureRequestHttpsOnly
    )
}
