//! The worker threads that split one matrix product between cores.
//!
//! A decode step is ~200 small products of 0.1–1 ms each, one after another. A general-purpose
//! pool (rayon) lets its workers fall asleep in the gaps between them, and waking a sleeping
//! thread costs tens of microseconds, about as much as the half of a product it would take over.
//! So, like ggml's thread pool, these workers spin while products keep coming and only park
//! after a quiet spell (`SPIN_BEFORE_PARK`), which keeps an idle engine idle.
//!
//! One product at a time owns the pool; a caller that finds it busy (a second model used from
//! another thread, a test running in parallel) runs its tasks itself. Results never depend on
//! which thread ran a task: tasks write disjoint outputs.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a worker keeps spinning for the next product before it parks.
const SPIN_BEFORE_PARK: Duration = Duration::from_millis(2);

static THREADS: AtomicUsize = AtomicUsize::new(0);
static POOL: OnceLock<Pool> = OnceLock::new();

/// Sets the number of threads products use, the caller included. Takes effect if called before
/// the first product; later calls are ignored (the workers already exist).
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// The number of threads products use.
pub fn threads() -> usize {
    pool().workers.len() + 1
}

/// Runs `f(0) … f(tasks - 1)`, spread over the pool's threads and the caller; returns when all
/// are done.
pub fn parallel_for(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    if tasks <= 1 || pool.workers.is_empty() {
        return (0..tasks).for_each(f);
    }
    match pool.owner.try_lock() {
        Ok(_guard) => pool.run(tasks, f),
        Err(_) => (0..tasks).for_each(f),
    }
}

/// Runs `f` once on every thread of the pool, the caller included: to size thread-local
/// buffers before a step needs them, whichever thread then takes which task. Waits for a
/// product another thread is running.
pub fn on_every_thread(f: &(dyn Fn() + Sync)) {
    let pool = pool();
    f();
    if !pool.workers.is_empty() {
        let _guard = pool.owner.lock().unwrap_or_else(|e| e.into_inner());
        pool.publish(&|_| f(), 0, true);
    }
}

/// An output buffer that parallel tasks fill in disjoint parts.
pub struct DisjointOut<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks only reach the buffer through `part`, whose callers promise disjoint ranges.
unsafe impl Send for DisjointOut<'_> {}
unsafe impl Sync for DisjointOut<'_> {}

impl<'a> DisjointOut<'a> {
    pub fn new(buffer: &'a mut [f32]) -> Self {
        Self { ptr: buffer.as_mut_ptr(), len: buffer.len(), _buffer: std::marker::PhantomData }
    }

    /// Elements `start..start + len`.
    ///
    /// # Safety
    /// No two live parts may overlap (each task writes its own outputs).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "part {start}+{len} outside {}", self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let n = match THREADS.load(Ordering::Relaxed) {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Pool::new(n - 1)
    })
}

/// The current product, readable by workers between its publication and their acknowledgement.
struct Job {
    /// The tasks' function, its lifetime erased: valid until every worker has acknowledged it.
    f: Option<&'static (dyn Fn(usize) + Sync)>,
    tasks: usize,
    /// Every worker calls `f` once, with its index, instead of claiming tasks.
    each: bool,
}

struct Shared {
    /// Bumped once per product; workers wait for it to change.
    generation: AtomicUsize,
    job: UnsafeCell<Job>,
    /// The next unclaimed task of the current product.
    next: AtomicUsize,
    /// Workers done with the current product.
    acks: AtomicUsize,
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is written only by the owner of the pool while every worker is waiting for the
// next generation, and read by workers only after they observed the new generation.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

struct Pool {
    shared: Arc<Shared>,
    workers: Vec<Thread>,
    owner: Mutex<()>,
}

impl Pool {
    fn new(n_workers: usize) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: UnsafeCell::new(Job { f: None, tasks: 0, each: false }),
            next: AtomicUsize::new(0),
            acks: AtomicUsize::new(0),
            sleeping: (0..n_workers).map(|_| AtomicBool::new(false)).collect(),
        });
        let workers = (0..n_workers)
            .map(|i| {
                let shared = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("ffnskip-worker-{i}"))
                    .spawn(move || worker(&shared, i))
                    .expect("spawning a worker thread")
                    .thread()
                    .clone()
            })
            .collect();
        Self { shared, workers, owner: Mutex::new(()) }
    }

    /// Publishes one product, takes part in it and waits until every worker acknowledged it.
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        self.publish(f, tasks, false);
    }

    /// Publishes a job (`each`: one call per worker, else `tasks` tasks the caller also
    /// claims) and waits until every worker acknowledged it.
    fn publish(&self, f: &(dyn Fn(usize) + Sync), tasks: usize, each: bool) {
        let s = &*self.shared;
        // SAFETY: all workers acknowledged the previous product and wait for a new generation;
        // the lifetime is erased because this function returns only after every worker is done
        // with `f`.
        unsafe {
            let f: &'static (dyn Fn(usize) + Sync) = std::mem::transmute(f);
            *s.job.get() = Job { f: Some(f), tasks, each };
        }
        s.next.store(0, Ordering::Relaxed);
        s.acks.store(0, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::SeqCst);
        for (flag, worker) in s.sleeping.iter().zip(&self.workers) {
            if flag.swap(false, Ordering::SeqCst) {
                worker.unpark();
            }
        }
        if !each {
            claim_tasks(s, f, tasks);
        }
        let mut spins = 0u32;
        while s.acks.load(Ordering::Acquire) < self.workers.len() {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                // A worker descheduled by another process: let it run.
                thread::yield_now();
            }
        }
    }
}

fn claim_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync), tasks: usize) {
    loop {
        let t = s.next.fetch_add(1, Ordering::Relaxed);
        if t >= tasks {
            return;
        }
        f(t);
    }
}

/// Workers start at generation 0, the one before the first product: a product published
/// before a worker first runs is still seen as new.
fn worker(s: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        seen = wait_for_generation(s, index, seen);
        // SAFETY: the owner wrote the job before bumping the generation we just observed and
        // keeps `f` alive until we acknowledge.
        let job = unsafe { &*s.job.get() };
        match job.f {
            Some(f) if job.each => f(index),
            Some(f) => claim_tasks(s, f, job.tasks),
            None => {}
        }
        s.acks.fetch_add(1, Ordering::Release);
    }
}

/// Spins until the generation differs from `seen`, parking after a quiet spell.
fn wait_for_generation(s: &Shared, index: usize, seen: usize) -> usize {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = s.generation.load(Ordering::Acquire);
        if g != seen {
            return g;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) && start.elapsed() > SPIN_BEFORE_PARK {
            break;
        }
    }
    // Announce the sleep, then re-check: the owner bumps the generation before it looks at the
    // flag, so one of the two sees the other (both SeqCst). The flag is raised again after every
    // wake-up: the owner of an earlier product may clear it late (it was descheduled between
    // its bump and its look), and that must not hide this wait from the next product.
    loop {
        s.sleeping[index].store(true, Ordering::SeqCst);
        let g = s.generation.load(Ordering::SeqCst);
        if g != seen {
            s.sleeping[index].store(false, Ordering::SeqCst);
            return g;
        }
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_every_thread_runs_once_on_each_thread() {
        let seen = Mutex::new(Vec::new());
        on_every_thread(&|| seen.lock().unwrap().push(thread::current().id()));
        let mut seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), threads());
        seen.sort_by_key(|id| format!("{id:?}"));
        seen.dedup();
        assert_eq!(seen.len(), threads(), "a thread ran it twice");
    }

    #[test]
    fn every_task_runs_exactly_once() {
        for tasks in [0, 1, 2, 3, 7, 64] {
            let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            parallel_for(tasks, &|t| {
                counts[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "tasks = {tasks}");
        }
    }

    #[test]
    fn concurrent_callers_and_parked_workers_all_finish() {
        let total = AtomicUsize::new(0);
        thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for round in 0..200 {
                        parallel_for(5, &|_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                        if round % 50 == 0 {
                            // Long enough for the workers to park.
                            thread::sleep(SPIN_BEFORE_PARK * 2);
                        }
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 5);
    }
}
