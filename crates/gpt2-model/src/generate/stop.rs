//! Stop strings over a stream of text pieces.

/// Watches streamed text for stop strings.
///
/// Feed it each decoded piece with [`push`](Self::push): it returns the text that is safe to show —
/// everything except a tail that could still be the beginning of a stop string (held back until the
/// next pieces decide). When a stop string appears, the text before it is returned and generation
/// should end; the stop string itself and anything after it are never shown. At the end of a
/// generation that did not stop on a string, [`finish`](Self::finish) releases the held-back tail.
///
/// ```
/// use gpt2_model::generate::StopMatcher;
/// let mut m = StopMatcher::new(["\n\n", "END"]);
/// assert_eq!(m.push("Hello E"), ("Hello ".to_string(), false)); // "E" could start "END"
/// assert_eq!(m.push("N"), (String::new(), false));
/// assert_eq!(m.push("D and more"), (String::new(), true));      // "END" found: nothing more shown
/// assert!(m.stopped());
///
/// let mut m = StopMatcher::new(["END"]);
/// assert_eq!(m.push("the E"), ("the ".to_string(), false));
/// assert_eq!(m.finish(), "E");
/// ```
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty strings are ignored).
    pub fn new<I, S>(stops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StopMatcher {
            stops: stops
                .into_iter()
                .map(Into::into)
                .filter(|s: &String| !s.is_empty())
                .collect(),
            pending: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string has been seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds a piece of text; returns the text now safe to show and whether a stop string was found.
    /// After a stop, further pieces are ignored.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        if self.stops.is_empty() {
            return (piece.to_string(), false);
        }
        self.pending.push_str(piece);
        // Earlier text was only released when it could not start a stop string, so any match
        // starts inside `pending`.
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            return (out, true);
        }
        let hold = self
            .stops
            .iter()
            .map(|s| longest_prefix_suffix(&self.pending, s))
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// Releases the held-back text (call when generation ends for another reason than a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest proper prefix of `stop` that `text` ends with.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().copied());
        let mut shown = String::new();
        for p in pieces {
            let (out, stop) = m.push(p);
            shown.push_str(&out);
            if stop {
                return (shown, true);
            }
        }
        shown.push_str(&m.finish());
        (shown, false)
    }

    #[test]
    fn stop_inside_one_piece() {
        assert_eq!(
            run(&["cat"], &["the cat sat", " on"]),
            ("the ".into(), true)
        );
    }

    #[test]
    fn stop_spanning_pieces() {
        assert_eq!(
            run(&["cat"], &["the c", "a", "t sat"]),
            ("the ".into(), true)
        );
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
    }

    #[test]
    fn false_start_is_released() {
        assert_eq!(
            run(&["cat"], &["the c", "ar", " is"]),
            ("the car is".into(), false)
        );
        assert_eq!(run(&["cat"], &["ca"]), ("ca".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(
            run(&["sat", "cat"], &["the cat sat"]),
            ("the ".into(), true)
        );
    }

    #[test]
    fn overlapping_prefixes() {
        // "aab": after "aa" the tail "aa" must be held; then "aab" matches.
        assert_eq!(run(&["aab"], &["xa", "a", "a", "b"]), ("xa".into(), true));
    }

    #[test]
    fn multibyte_stop_strings() {
        assert_eq!(run(&["été"], &["un é", "t", "é!"]), ("un ".into(), true));
        assert_eq!(run(&["été"], &["un é", "x"]), ("un éx".into(), false));
    }

    #[test]
    fn no_stops_passes_everything_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&[""], &["a", "b"]), ("ab".into(), false));
    }
}
