//! Untrusted work in a child process with a memory and a time budget.
//!
//! A model file's chat template is code ffnskip runs. minijinja's fuel bounds the instructions a
//! template executes, not the bytes: `{% set s = s ~ s %}` a few times within its fuel builds
//! gigabytes before any output cap can see them. So renders run in a [`Worker`]: a forked child
//! whose address space is capped (`RLIMIT_AS`) and which the caller kills at a deadline. An
//! allocation past the cap aborts the child, not ffnskip, and the caller gets one [`Failure`].
//!
//! The child is a plain `fork` without `exec`, made on the first call and kept for the next ones
//! (a fork costs 1–5 ms with a model loaded; a request to a running child, tens of µs). It runs
//! the handler on its copy of the caller's memory and answers through a socket. Only the forking
//! thread exists in the child, so the handler must not wait on locks other threads may hold
//! (glibc's malloc is safe after `fork`: it resets its locks in the child).

use std::time::Duration;

/// How much a worker may use.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Address space the child may add to what it inherits, over its whole life.
    pub memory: usize,
    /// Wall-clock time per request before the child is killed.
    pub time: Duration,
}

/// Why a request gave no result.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Failure {
    /// The handler's own error.
    #[error("{0}")]
    Work(String),
    #[error("needed more than {} MiB of memory", .0 >> 20)]
    Memory(usize),
    #[error("ran longer than {0:?}")]
    Time(Duration),
    /// The child could not be started or died in some other way.
    #[error("failed in its process: {0}")]
    Process(String),
}

/// What a worker runs for each request.
pub type Handler = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

pub use imp::Worker;

#[cfg(target_os = "linux")]
mod imp {
    use std::io::{self, Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::Mutex;
    use std::time::Instant;

    use super::{Budget, Failure, Handler};

    /// The first byte of an answer: what its payload holds.
    const OK: u8 = 0;
    const ERR: u8 = 1;
    /// An answer claiming more than this is not one (a rendered prompt is capped far lower).
    const ANSWER_MAX: u64 = 64 << 20;

    /// A handler that runs in a child process under a budget, one request at a time. A child
    /// that overran its budget is gone; the next request starts a new one.
    pub struct Worker {
        handler: Handler,
        budget: Budget,
        child: Mutex<Option<Child>>,
    }

    struct Child {
        pid: libc::pid_t,
        stream: UnixStream,
    }

    impl Worker {
        pub fn new(budget: Budget, handler: Handler) -> Self {
            Self { handler, budget, child: Mutex::new(None) }
        }

        /// The handler's answer to `request`, computed in the child.
        pub fn call(&self, request: &[u8]) -> Result<Vec<u8>, Failure> {
            let mut slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
            let child = match slot.take() {
                Some(child) => child,
                None => self.spawn().map_err(process)?,
            };
            match exchange(&child.stream, request, Instant::now() + self.budget.time) {
                Ok(answer) => {
                    *slot = Some(child);
                    answer
                }
                Err(Broken::Deadline) => {
                    child.end(false);
                    Err(Failure::Time(self.budget.time))
                }
                Err(Broken::Io(e)) => {
                    // The child closes its end only by exiting.
                    let exited = matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    );
                    Err(child.end(exited).map_or(process(e), |signal| self.failure(signal)))
                }
            }
        }

        /// What a child killed by `signal` ran out of.
        fn failure(&self, signal: i32) -> Failure {
            match signal {
                // An allocation past RLIMIT_AS aborts; a stack that cannot grow past it faults.
                libc::SIGABRT | libc::SIGSEGV | libc::SIGBUS => Failure::Memory(self.budget.memory),
                signal => Failure::Process(format!("killed by signal {signal}")),
            }
        }

        fn spawn(&self) -> io::Result<Child> {
            // Forks one at a time, so that no child inherits another child's socket between its
            // fork and its parent closing that end.
            static FORK: Mutex<()> = Mutex::new(());
            let _one_at_a_time = FORK.lock().unwrap_or_else(|e| e.into_inner());
            let address_space = address_space()?.saturating_add(self.budget.memory);
            let (ours, theirs) = UnixStream::pair()?;
            // SAFETY: the child only runs `serve`, which never returns: it ends in `_exit`.
            match unsafe { libc::fork() } {
                -1 => Err(io::Error::last_os_error()),
                0 => {
                    drop(ours);
                    serve(theirs, address_space, &self.handler)
                }
                pid => Ok(Child { pid, stream: ours }),
            }
        }
    }

    impl Drop for Worker {
        fn drop(&mut self) {
            if let Some(child) = self.child.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                child.end(false);
            }
        }
    }

    impl Child {
        /// Reaps the child, killing it first unless it has `exited`; the signal that ended it,
        /// if one did before any kill.
        fn end(self, exited: bool) -> Option<i32> {
            let mut status = 0;
            // SAFETY: `pid` is our child and not yet reaped, so the id is still its; `status` is
            // a valid place for its status.
            unsafe {
                if !exited {
                    libc::kill(self.pid, libc::SIGKILL);
                }
                while libc::waitpid(self.pid, &mut status, 0) == -1
                    && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
                {}
            }
            (exited && libc::WIFSIGNALED(status)).then(|| libc::WTERMSIG(status))
        }
    }

    enum Broken {
        Deadline,
        Io(io::Error),
    }

    impl From<io::Error> for Broken {
        fn from(e: io::Error) -> Self {
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Broken::Deadline,
                _ => Broken::Io(e),
            }
        }
    }

    /// Sends a request and reads its answer: `Err` when the child broke, the inner `Err` when
    /// the handler refused.
    fn exchange(stream: &UnixStream, request: &[u8], deadline: Instant) -> Result<Result<Vec<u8>, Failure>, Broken> {
        let mut stream = DeadlineStream { stream, deadline };
        stream.write_all(&(request.len() as u64).to_le_bytes())?;
        stream.write_all(request)?;
        let mut head = [0u8; 9];
        stream.read_exact(&mut head)?;
        let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
        if len > ANSWER_MAX {
            return Err(Broken::Io(io::Error::other(format!("an answer of {len} bytes"))));
        }
        let mut payload = vec![0; len as usize];
        stream.read_exact(&mut payload)?;
        Ok(match head[0] {
            OK => Ok(payload),
            _ => Err(Failure::Work(String::from_utf8_lossy(&payload).into_owned())),
        })
    }

    /// A socket whose every read and write times out at one deadline.
    struct DeadlineStream<'a> {
        stream: &'a UnixStream,
        deadline: Instant,
    }

    impl DeadlineStream<'_> {
        fn left(&self) -> io::Result<Option<std::time::Duration>> {
            match self.deadline.saturating_duration_since(Instant::now()) {
                left if left.is_zero() => Err(io::ErrorKind::TimedOut.into()),
                left => Ok(Some(left)),
            }
        }
    }

    impl Read for DeadlineStream<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.stream.set_read_timeout(self.left()?)?;
            self.stream.read(buf)
        }
    }

    impl Write for DeadlineStream<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.stream.set_write_timeout(self.left()?)?;
            self.stream.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The child: answers requests until the caller closes its end.
    fn serve(stream: UnixStream, address_space: usize, handler: &Handler) -> ! {
        detach(&stream);
        let cap = libc::rlimit { rlim_cur: address_space as libc::rlim_t, rlim_max: address_space as libc::rlim_t };
        // SAFETY: a plain system call on a valid `rlimit`; it only lowers this process's limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &cap) } != 0 {
            exit(2);
        }
        let mut stream = stream;
        loop {
            let mut len = [0u8; 8];
            if stream.read_exact(&mut len).is_err() {
                exit(0);
            }
            let mut request = vec![0; u64::from_le_bytes(len) as usize];
            if stream.read_exact(&mut request).is_err() {
                exit(0);
            }
            let (tag, payload) = match catch_unwind(AssertUnwindSafe(|| handler(&request))) {
                Ok(Ok(bytes)) => (OK, bytes),
                Ok(Err(message)) => (ERR, message.into_bytes()),
                Err(_) => (ERR, b"it panicked".to_vec()),
            };
            let head = [[tag].as_slice(), &(payload.len() as u64).to_le_bytes()].concat();
            if stream.write_all(&head).and_then(|()| stream.write_all(&payload)).is_err() {
                exit(1);
            }
        }
    }

    /// Lets go of every descriptor but the socket: stdin and stdout point to /dev/null (a child
    /// holding the caller's stdout would keep a reader waiting for its end), stderr too (Rust
    /// reports a failed allocation there before aborting; the caller reports it once), and with
    /// glibc (`close_range`) all others are closed.
    fn detach(stream: &UnixStream) {
        // SAFETY: opens a constant path and duplicates descriptors this process owns.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
                    libc::dup2(null, fd);
                }
                libc::close(null);
            }
        }
        #[cfg(target_env = "gnu")]
        {
            let keep = stream.as_raw_fd() as libc::c_uint;
            // SAFETY: closes descriptors this process owns, none of which it uses again.
            unsafe {
                libc::close_range(3, keep - 1, 0);
                libc::close_range(keep + 1, libc::c_uint::MAX, 0);
            }
        }
        #[cfg(not(target_env = "gnu"))]
        let _ = stream;
    }

    fn exit(status: i32) -> ! {
        // SAFETY: ends the child without running the caller's exit handlers or flushing the
        // caller's buffered output a second time.
        unsafe { libc::_exit(status) }
    }

    /// This process's address space now: the child inherits it, and its cap is this plus the budget.
    fn address_space() -> io::Result<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm")?;
        let pages: usize = statm
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| io::Error::other("unreadable /proc/self/statm"))?;
        // SAFETY: sysconf with a constant name has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Ok(pages * page.max(4096) as usize)
    }

    fn process(e: io::Error) -> Failure {
        Failure::Process(e.to_string())
    }
}

/// Elsewhere the handler runs in this process, bounded only by what it bounds itself (the child
/// needs Linux's `/proc/self/statm` to size its cap).
#[cfg(not(target_os = "linux"))]
mod imp {
    use super::{Budget, Failure, Handler};

    pub struct Worker {
        handler: Handler,
    }

    impl Worker {
        pub fn new(_budget: Budget, handler: Handler) -> Self {
            Self { handler }
        }

        pub fn call(&self, request: &[u8]) -> Result<Vec<u8>, Failure> {
            (self.handler)(request).map_err(Failure::Work)
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget { memory: 64 << 20, time: Duration::from_secs(5) };

    /// Echoes, refuses on "no", panics on "boom", grows by the MiB a request names, spins on
    /// "spin", and tells its process id on "pid".
    fn worker(budget: Budget) -> Worker {
        Worker::new(
            budget,
            Box::new(|request| match request {
                b"no" => Err("no".into()),
                b"boom" => panic!("boom"),
                b"spin" => loop {
                    std::hint::spin_loop();
                },
                b"pid" => Ok(std::process::id().to_le_bytes().to_vec()),
                _ => match std::str::from_utf8(request).ok().and_then(|r| r.strip_suffix(" MiB")) {
                    Some(mib) => {
                        let hold: Vec<_> =
                            (0..mib.parse().unwrap()).map(|_| std::hint::black_box(vec![1u8; 1 << 20])).collect();
                        Ok(vec![hold.len() as u8])
                    }
                    None => Ok(request.to_vec()),
                },
            }),
        )
    }

    #[test]
    fn answers_and_refusals_come_back_from_one_child() {
        let w = worker(BUDGET);
        assert_eq!(w.call(b"hello"), Ok(b"hello".to_vec()));
        assert_eq!(w.call(b"no"), Err(Failure::Work("no".into())));
        let big = vec![7u8; 3 << 20];
        assert_eq!(w.call(&big), Ok(big));
        let pid = w.call(b"pid").unwrap();
        assert_ne!(pid, std::process::id().to_le_bytes(), "the handler ran in this process");
        assert_eq!(w.call(b"pid").unwrap(), pid, "a second request started a second child");
    }

    #[test]
    fn a_panic_is_the_handlers_error_and_the_child_lives_on() {
        let w = worker(BUDGET);
        let pid = w.call(b"pid").unwrap();
        assert_eq!(w.call(b"boom"), Err(Failure::Work("it panicked".into())));
        assert_eq!(w.call(b"pid").unwrap(), pid);
    }

    #[test]
    fn memory_past_the_budget_ends_the_child_not_the_caller() {
        let w = worker(BUDGET);
        assert_eq!(w.call(b"16 MiB"), Ok(vec![16]));
        let pid = w.call(b"pid").unwrap();
        assert_eq!(w.call(b"200 MiB"), Err(Failure::Memory(BUDGET.memory)));
        assert_ne!(w.call(b"pid").unwrap(), pid, "the next request needs a new child");
        assert_eq!(w.call(b"16 MiB"), Ok(vec![16]));
        let roomy = worker(Budget { memory: 1 << 30, ..BUDGET });
        assert_eq!(roomy.call(b"200 MiB"), Ok(vec![200]));
    }

    #[test]
    fn work_past_the_deadline_is_killed() {
        let budget = Budget { time: Duration::from_millis(200), ..BUDGET };
        let w = worker(budget);
        let start = std::time::Instant::now();
        assert_eq!(w.call(b"spin"), Err(Failure::Time(budget.time)));
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
        assert_eq!(w.call(b"hello"), Ok(b"hello".to_vec()));
    }
}
