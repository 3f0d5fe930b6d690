//! Encoding pathological text takes memory linear in the text with a small constant.
//!
//! A counting global allocator measures the peak of the bytes allocated during an
//! encode call (above what was allocated before it). One test function runs the cases
//! in turn, so that no other test allocates at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use gpt2_tokenizer::{Tokenizer, MAX_PIECE_CHARS};

/// The system allocator, keeping count of the bytes allocated now and at the peak.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn allocated(size: usize) {
    let now = CURRENT.fetch_add(size, Ordering::SeqCst) + size;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call goes to `System` with the caller's own arguments; the counters
// are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            allocated(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            allocated(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Counted as a new block before the old one goes: a moving realloc holds both.
            allocated(new_size);
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The ids of `text`, and the peak of the bytes allocated while encoding it.
fn encode_measured(tokenizer: &Tokenizer, text: &str) -> (Vec<u32>, usize) {
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let ids = tokenizer.encode(text).expect("encode");
    let peak = PEAK.load(Ordering::SeqCst) - before;
    (ids, peak)
}

/// A few MB of text that is one pre-tokenization piece: letters with no space.
fn pseudo_random_letters(len: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

#[test]
fn long_single_words_encode_in_bounded_memory() {
    let tokenizer = Tokenizer::gpt2();
    // Warm up whatever is allocated once (thread-local caches of `tokenizers`).
    tokenizer.encode("warm up").expect("encode");

    let cases: Vec<(&str, String)> = vec![
        ("8 MB of 'a'", "a".repeat(8 << 20)),
        ("2 MB of 'a'", "a".repeat(2 << 20)),
        ("4 MB of 'é'", "é".repeat(2 << 20)),
        ("3 MB of spaces", " ".repeat(3 << 20)),
        (
            "2 MB of pseudo-random letters",
            pseudo_random_letters(2 << 20),
        ),
        (
            "2 MB of '!' with a space in front",
            format!(" {}", "!".repeat(2 << 20)),
        ),
    ];
    for (name, text) in &cases {
        assert!(text.chars().count() > MAX_PIECE_CHARS);
        let (ids, peak) = encode_measured(&tokenizer, text);
        let ratio = peak as f64 / text.len() as f64;
        eprintln!(
            "{name}: {} ids, peak {peak} bytes ({ratio:.2}x the text)",
            ids.len()
        );
        assert!(
            peak <= 8 * text.len(),
            "{name}: encoding allocated {peak} bytes at its peak, {ratio:.1}x the text"
        );
        assert_eq!(
            tokenizer.decode(&ids).expect("decode"),
            *text,
            "{name}: decode(encode(text)) is not the text"
        );
    }
}
