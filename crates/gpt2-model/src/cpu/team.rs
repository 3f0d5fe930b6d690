//! A team of spinning helper threads for the short parallel loops of a decode step.
//!
//! A decode step of the 124M model is ~50 matrix products of ~0.1–0.3 ms each, with a little
//! serial work (layer norm, bias, GELU, residual) between them. Rayon's idle workers go to
//! sleep between such loops, and waking one is a futex call plus an inter-processor
//! interrupt: in a virtual machine that cost ~10% of the step (measured with `perf`: the
//! kernel's scheduler functions). The helpers here instead spin (`pause`) for a short while
//! after each loop, waiting for the next, and only then park, as llama.cpp's thread pool
//! does. They are rayon's threads' stand-ins for decode: the loops that run here are the
//! decode kernels ([`crate::q8`], [`crate::gemv`], decode attention); anything bigger (the
//! prefill gemms, candle's own ops) still runs on rayon, whose workers sleep meanwhile. The
//! prefill gemms call [`rest`] first, so that the helpers park at once instead of spinning
//! beside them after the last loop.
//!
//! The team has `rayon::current_num_threads() - 1` helpers (fixed at its first use), so the
//! caller plus its helpers use as many cores as rayon would. It serves one loop at a time:
//! a loop started while another runs (another thread's model, or a loop nested in a task)
//! goes to rayon instead.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long a helper spins for the next loop before it parks. Longer than the serial work
/// between two products of a decode step, and than sampling a token between steps.
const SPIN: Duration = Duration::from_millis(2);

/// Runs `f(i)` for every `i` in `0..n`, on the calling thread and the team's helpers, and
/// returns when all have run. Tasks are handed out one index at a time, in order, so a task
/// should be a sizeable piece of work (a block of rows, a head).
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    match n {
        0 => {}
        1 => f(0),
        _ => match team() {
            Some(team) => team.run(n, &f),
            None => (0..n).into_par_iter().for_each(&f),
        },
    }
}

/// Tells the helpers to park now instead of spinning for the next loop: for the callers of
/// a long computation on rayon's threads (a prefill's gemm), which a spinning helper would
/// otherwise share a core with for up to [`SPIN`] (on two cores, half the machine). The
/// next loop wakes them as usual.
pub fn rest() {
    if let Some(team) = TEAM.get().and_then(Option::as_ref) {
        team.rest.store(true, Ordering::Relaxed);
    }
}

/// Cuts `out` into chunks of `chunk` elements (the last may be shorter) and runs
/// `f(index, chunk)` for each, as [`for_each`] does.
pub fn for_each_chunk_mut<T: Send>(
    out: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunk = chunk.max(1);
    let len = out.len();
    let base = SendPtr(out.as_mut_ptr());
    for_each(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        let end = (start + chunk).min(len);
        // SAFETY: `start..end` lies inside `out` and the ranges of distinct `i` do not
        // overlap; each index runs once, and `out` stays mutably borrowed (so untouched
        // elsewhere) until `for_each` has returned, after every task.
        let part = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        f(i, part);
    });
}

/// A pointer that may cross to the helpers (the tasks write disjoint ranges through it).
struct SendPtr<T>(*mut T);
// SAFETY: only used by `for_each_chunk_mut`, whose tasks touch disjoint elements.
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// Spins until `ready()`, yielding the core now and then: a helper still running a task may
/// have been descheduled (more runnable threads than cores), and then spinning only delays it.
fn wait_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1 << 12) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The team (see [`team`]).
static TEAM: OnceLock<Option<Team>> = OnceLock::new();

/// The global team, started at first use; `None` with a single rayon thread or when the
/// helper threads could not be spawned.
fn team() -> Option<&'static Team> {
    TEAM.get_or_init(|| Team::start(rayon::current_num_threads().saturating_sub(1)))
        .as_ref()
}

/// One loop: the task function (its lifetime erased; see `Team::run`) and its counters.
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
}

impl Job {
    /// Takes and runs tasks until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            // SAFETY: `f` outlives the job: `Team::run` does not return while a helper is
            // inside it (see `in_job`).
            let f = unsafe { &*self.f };
            if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

struct Team {
    helpers: usize,
    /// Held by the thread whose loop the team runs.
    busy: Mutex<()>,
    /// The current job, null between loops.
    job: AtomicPtr<Job>,
    /// Bumped for every job, after `job` is set: what the helpers watch.
    epoch: AtomicU64,
    /// Helpers that may be reading `job` (counted before they load it).
    in_job: AtomicUsize,
    /// Helpers parked on `wake`.
    sleepers: AtomicUsize,
    /// Set by [`rest`]: spinning helpers park at once. Cleared by the next loop.
    rest: AtomicBool,
    park: Mutex<()>,
    wake: Condvar,
}

impl Team {
    fn start(helpers: usize) -> Option<Team> {
        if helpers == 0 {
            return None;
        }
        let team = Team {
            helpers,
            busy: Mutex::new(()),
            job: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicU64::new(0),
            in_job: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            rest: AtomicBool::new(false),
            park: Mutex::new(()),
            wake: Condvar::new(),
        };
        Some(team)
    }

    /// Spawns the helpers on first use (they need the team's final, static address).
    fn ensure_helpers(&'static self) -> bool {
        static STARTED: OnceLock<bool> = OnceLock::new();
        *STARTED.get_or_init(|| {
            (0..self.helpers).all(|i| {
                std::thread::Builder::new()
                    .name(format!("gpt2-team-{i}"))
                    .spawn(move || self.helper())
                    .is_ok()
            })
        })
    }

    fn run(&'static self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let _busy = match self.busy.try_lock() {
            Ok(g) => g,
            // A task panicked in an earlier loop (and that panic went to its caller): the
            // team itself is in order.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return (0..n).into_par_iter().for_each(f),
        };
        if !self.ensure_helpers() {
            return (0..n).into_par_iter().for_each(f);
        }
        // SAFETY: the lifetime is erased only for the helpers' benefit; this function does
        // not return before every helper has left the job (the `in_job` wait below), and
        // the job is unpublished before that wait.
        let f: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(f) };
        let job = Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        self.rest.store(false, Ordering::Relaxed);
        self.job
            .store(&job as *const Job as *mut Job, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.park.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        job.work();
        wait_until(|| job.done.load(Ordering::Acquire) >= n);
        self.job.store(std::ptr::null_mut(), Ordering::SeqCst);
        wait_until(|| self.in_job.load(Ordering::SeqCst) == 0);
        assert!(
            !job.panicked.load(Ordering::Relaxed),
            "a parallel task of the decode step panicked"
        );
    }

    fn helper(&'static self) {
        let mut seen = self.epoch.load(Ordering::SeqCst);
        loop {
            // Spin for the next job, then park.
            let start = Instant::now();
            let mut spins = 0u32;
            while self.epoch.load(Ordering::SeqCst) == seen {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024)
                    && (self.rest.load(Ordering::Relaxed) || start.elapsed() > SPIN)
                {
                    let mut g = self.park.lock().unwrap_or_else(|e| e.into_inner());
                    self.sleepers.fetch_add(1, Ordering::SeqCst);
                    while self.epoch.load(Ordering::SeqCst) == seen {
                        g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
            }
            seen = self.epoch.load(Ordering::SeqCst);
            self.in_job.fetch_add(1, Ordering::SeqCst);
            let job = self.job.load(Ordering::SeqCst);
            if !job.is_null() {
                // SAFETY: published by `run`, which waits for `in_job` to drop to zero
                // before its job goes out of scope.
                unsafe { &*job }.work();
            }
            self.in_job.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once() {
        for n in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            for_each(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{n}");
        }
    }

    #[test]
    fn chunks_cover_the_slice() {
        let mut v = vec![0usize; 1001];
        for_each_chunk_mut(&mut v, 64, |c, part| {
            for (j, x) in part.iter_mut().enumerate() {
                *x = c * 64 + j;
            }
        });
        assert!(v.iter().enumerate().all(|(i, &x)| i == x));
    }

    #[test]
    fn concurrent_and_nested_loops_fall_back_to_rayon() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        for_each(8, |_| {
                            for_each(3, |_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 8 * 3);
    }

    #[test]
    fn loops_after_a_rest_still_run_on_every_index() {
        for round in 0..50 {
            let hits: Vec<AtomicUsize> = (0..16).map(|_| AtomicUsize::new(0)).collect();
            for_each(16, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            // Parked at once, or (when the call lands while they spin) on their way to it.
            rest();
            if round % 7 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            for_each(16, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 2),
                "{round}"
            );
        }
    }

    #[test]
    fn loops_after_the_helpers_park_still_run() {
        let sum = AtomicUsize::new(0);
        for_each(4, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        std::thread::sleep(SPIN * 3);
        for_each(4, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 12);
    }
}
