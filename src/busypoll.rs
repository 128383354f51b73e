//! Busy polling: after a worker has had work, keep it polling for I/O for a
//! short window instead of letting it sleep in `epoll_wait`.
//!
//! In a VM an idle vCPU halts, and waking it costs a trip through the
//! hypervisor on every event; a proxied connection has several such wakeups
//! in a row. A worker that keeps polling for a few tens of microseconds after
//! its last work finds the next event without one. Off by default: it spends
//! CPU time (up to the window after each burst of work) to buy latency, which
//! a load-test target on its own cores wants and a shared host may not
//! (CPU limits count the spinning).
//!
//! Mechanism: one spinner task per worker. Each accepted connection and
//! each chunk read for forwarding counts as work ([`worked`]); work wakes the
//! sleeping spinners. Awake, a spinner yields in a loop: a yielded task makes
//! tokio poll the I/O driver with a zero timeout before running it again, so
//! its worker never blocks. Work seen between two turns starts the window
//! again; when the window passes with none, the spinner goes back to sleep
//! and the worker may block. Timers and other wakeups do not count as work,
//! so an idle router (config watch ticks, idle timeouts) stays asleep.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Set once spinners run; until then [`worked`] is a single relaxed load.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Work done so far, all workers together.
static WORK: AtomicU64 = AtomicU64::new(0);
/// Some spinner may be waiting for work.
static ASLEEP: AtomicBool = AtomicBool::new(false);
/// Wakes the waiting spinners.
static WAKE: Notify = Notify::const_new();

/// Counts a piece of work (an accept, a chunk read) and wakes sleeping
/// spinners; a relaxed load and nothing else when busy polling is off.
#[inline]
pub fn worked() {
    if ENABLED.load(Ordering::Relaxed) {
        WORK.fetch_add(1, Ordering::Relaxed);
        if ASLEEP.load(Ordering::Relaxed) && ASLEEP.swap(false, Ordering::AcqRel) {
            WAKE.notify_waiters();
        }
    }
}

/// Busy polling for a runtime: `start` it from inside.
#[derive(Debug, Clone, Copy)]
pub struct BusyPoll {
    window: Duration,
}

impl BusyPoll {
    /// Busy polling for `window` after work; `None` when `window` is zero (off).
    pub fn new(window: Duration) -> Option<BusyPoll> {
        (!window.is_zero()).then_some(BusyPoll { window })
    }

    /// Starts one spinner per worker of the current runtime. For a worker to
    /// poll, no other may be blocked in `epoll_wait` holding the driver, so
    /// all of them spin (like HAProxy's `busy-polling`, per thread).
    pub fn start(self) {
        ENABLED.store(true, Ordering::Relaxed);
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        for _ in 0..workers.max(1) {
            tokio::spawn(spin(self.window));
        }
    }
}

async fn spin(window: Duration) {
    loop {
        // Registered before saying so, so a wake between the two is not lost.
        let notified = WAKE.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        ASLEEP.store(true, Ordering::Release);
        notified.await;
        let mut seen = WORK.load(Ordering::Relaxed);
        let mut until = Instant::now() + window;
        loop {
            tokio::task::yield_now().await;
            // Give the CPU to any thread waiting for it here (sched_yield
            // returns at once when there is none): spinning on a CPU shared
            // with the router's clients or backends would only delay them.
            std::thread::yield_now();
            let now = Instant::now();
            let done = WORK.load(Ordering::Relaxed);
            if done != seen {
                seen = done;
                until = now + window;
            } else if now >= until {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_window_is_off() {
        assert!(BusyPoll::new(Duration::ZERO).is_none());
    }

    /// CPU time a thread has run, from the kernel's scheduler statistics.
    #[cfg(target_os = "linux")]
    fn thread_cpu(thread: &std::path::Path) -> Duration {
        let path = std::path::Path::new("/proc").join(thread).join("schedstat");
        let stat = std::fs::read_to_string(path).unwrap();
        Duration::from_nanos(stat.split_whitespace().next().unwrap().parse().unwrap())
    }

    /// Work makes the worker spin for the window; with no work it sleeps,
    /// even when other tasks and timers wake it. (The statics are shared by
    /// the process: this is the only test that starts spinners.)
    #[cfg(target_os = "linux")]
    #[test]
    fn work_starts_a_window_and_an_idle_worker_sleeps() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { BusyPoll::new(Duration::from_millis(300)).unwrap().start() });
        let worker = rt
            .block_on(rt.spawn(async { std::fs::read_link("/proc/thread-self") }))
            .unwrap()
            .unwrap();
        let cpu = || thread_cpu(&worker);

        // Wakeups without work: a task and a timer. The worker stays asleep.
        std::thread::sleep(Duration::from_millis(50));
        let start = cpu();
        drop(rt.spawn(async {}));
        drop(rt.spawn(async { tokio::time::sleep(Duration::from_millis(10)).await }));
        std::thread::sleep(Duration::from_millis(200));
        let idle = cpu() - start;
        assert!(idle < Duration::from_millis(20), "idle worker spent {idle:?} in 200 ms");

        // Work (as a forwarded chunk would count) starts a 300 ms window.
        let start = cpu();
        drop(rt.spawn(async { worked() }));
        std::thread::sleep(Duration::from_millis(200));
        let spinning = cpu() - start;
        assert!(
            spinning > Duration::from_millis(50),
            "spent {spinning:?} in a 200 ms window"
        );

        // The window ends: asleep again.
        std::thread::sleep(Duration::from_millis(200));
        let start = cpu();
        std::thread::sleep(Duration::from_millis(200));
        let idle = cpu() - start;
        assert!(
            idle < Duration::from_millis(20),
            "spent {idle:?} in 200 ms after the window"
        );
    }
}
