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

use std::cell::OnceCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What the spinners of one runtime and its workers share.
struct Shared {
    window: Duration,
    /// Work done so far, all workers together.
    work: AtomicU64,
    /// Some spinner may be waiting for work.
    asleep: AtomicBool,
    /// Wakes the waiting spinners.
    wake: Notify,
}

thread_local! {
    /// The busy poller of the runtime this thread works for, if it has one
    /// (set as each of its threads starts).
    static CURRENT: OnceCell<Arc<Shared>> = const { OnceCell::new() };
}

/// Counts a piece of work (an accept, a chunk read) and wakes sleeping
/// spinners; a thread-local check and nothing else when busy polling is off.
#[inline]
pub fn worked() {
    CURRENT.with(|current| {
        if let Some(shared) = current.get() {
            shared.work.fetch_add(1, Ordering::Relaxed);
            if shared.asleep.load(Ordering::Relaxed) && shared.asleep.swap(false, Ordering::AcqRel) {
                shared.wake.notify_waiters();
            }
        }
    });
}

/// Busy polling for one runtime: `install` on its builder, then `start`
/// from inside it.
#[derive(Clone)]
pub struct BusyPoll {
    shared: Arc<Shared>,
}

impl BusyPoll {
    /// Busy polling for `window` after work; `None` when `window` is zero (off).
    pub fn new(window: Duration) -> Option<BusyPoll> {
        (!window.is_zero()).then(|| BusyPoll {
            shared: Arc::new(Shared {
                window,
                work: AtomicU64::new(0),
                asleep: AtomicBool::new(false),
                wake: Notify::new(),
            }),
        })
    }

    /// Makes the runtime's threads count their work into this poller.
    pub fn install(&self, builder: &mut tokio::runtime::Builder) {
        let shared = Arc::clone(&self.shared);
        builder.on_thread_start(move || {
            CURRENT.with(|current| {
                let _ = current.set(Arc::clone(&shared));
            });
        });
    }

    /// Starts one spinner per worker of the current runtime. For a worker to
    /// poll, no other may be blocked in `epoll_wait` holding the driver, so
    /// all of them spin (like HAProxy's `busy-polling`, per thread).
    pub fn start(&self) {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        for _ in 0..workers.max(1) {
            tokio::spawn(spin(Arc::clone(&self.shared)));
        }
    }
}

async fn spin(shared: Arc<Shared>) {
    loop {
        // Registered before saying so, so a wake between the two is not lost.
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        shared.asleep.store(true, Ordering::Release);
        notified.await;
        let mut seen = shared.work.load(Ordering::Relaxed);
        let mut until = Instant::now() + shared.window;
        loop {
            tokio::task::yield_now().await;
            // Give the CPU to any thread waiting for it here (sched_yield
            // returns at once when there is none): spinning on a CPU shared
            // with the router's clients or backends would only delay them.
            std::thread::yield_now();
            let now = Instant::now();
            let done = shared.work.load(Ordering::Relaxed);
            if done != seen {
                seen = done;
                until = now + shared.window;
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
    /// even when other tasks and timers wake it; work on threads of other
    /// runtimes (the other tests) does not count.
    #[cfg(target_os = "linux")]
    #[test]
    fn work_starts_a_window_and_an_idle_worker_sleeps() {
        let busy = BusyPoll::new(Duration::from_millis(300)).unwrap();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(1).enable_all();
        busy.install(&mut builder);
        let rt = builder.build().unwrap();
        rt.block_on(async { busy.start() });
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
