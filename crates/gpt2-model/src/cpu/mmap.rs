//! Advice to the kernel about memory the weights live in: mapped weight files and the
//! blocks of matrices quantized at load.

/// What [`advise`] tells the kernel about a range.
#[derive(Clone, Copy)]
pub enum Advice {
    /// Map every page now, in one call (`MADV_POPULATE_READ`, Linux ≥ 5.14), instead of one
    /// page fault per 4 KiB during the copy.
    Populate,
    /// Back the range with transparent huge pages on its next page faults
    /// (`MADV_HUGEPAGE`).
    HugePage,
}

/// What `madvise` is asked.
#[derive(Clone, Copy)]
enum Flag {
    Populate,
    HugePage,
    /// `MADV_DONTNEED`: only ever for read-only file mappings (see [`drop_mapped`]).
    DropMapped,
}

/// `madvise` on the whole pages inside `bytes`. Only a hint: errors (an old kernel, another
/// OS) are ignored.
#[cfg(target_os = "linux")]
fn madvise(bytes: &[u8], advice: Flag) {
    const PAGE: usize = 4096;
    let start = (bytes.as_ptr() as usize).div_ceil(PAGE) * PAGE;
    let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
    if end <= start {
        return;
    }
    let flag = match advice {
        Flag::Populate => 22, // MADV_POPULATE_READ
        Flag::DropMapped => libc::MADV_DONTNEED,
        Flag::HugePage => libc::MADV_HUGEPAGE,
    };
    // SAFETY: the range lies inside `bytes`, live memory of this process. No advice changes
    // what reading it returns: DropMapped is only given read-only file mappings (see
    // `drop_mapped`: there it drops the page-table entries, and the next access maps the
    // same file pages), Populate only maps pages early, and HugePage only changes the size
    // of the pages that later faults allocate.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, flag);
    }
}

#[cfg(not(target_os = "linux"))]
fn madvise(_: &[u8], _: Flag) {}

/// Advice on any memory of this process (it never changes what reading it returns).
pub fn advise(bytes: &[u8], advice: Advice) {
    madvise(
        bytes,
        match advice {
            Advice::Populate => Flag::Populate,
            Advice::HugePage => Flag::HugePage,
        },
    );
}

/// Unmaps the pages of `bytes` from the process when they are a read-only file mapping
/// (they stay in the page cache): after their values have been copied or quantized, so that
/// the peak RSS is about one copy of the weights, not two. Heap memory (weights parsed from
/// bytes in memory) is left alone: `MADV_DONTNEED` would zero it.
pub fn drop_mapped(bytes: &gpt2_weights::SharedBytes) {
    if bytes.is_mapped() {
        madvise(bytes, Flag::DropMapped);
    }
}

/// `len` zeroed bytes in transparent huge pages where Linux gives them (`MADV_HUGEPAGE`
/// before the first write): the decode kernels stream quantized matrices, and 2 MiB pages
/// let the hardware prefetchers run on (4 KiB pages stop them at every page boundary) and
/// spare the TLB. Only a hint: elsewhere, or when refused, these are ordinary pages.
pub fn huge_zeroed(len: usize) -> Vec<u8> {
    // calloc-style: a large zeroed allocation is fresh, untouched memory, so the advice
    // applies to the page faults of the writes that follow.
    let v = vec![0u8; len];
    advise(&v, Advice::HugePage);
    v
}
