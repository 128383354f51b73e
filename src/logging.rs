//! Log output. Access-log lines (one per connection, `sni_router::access` at
//! info) are gathered in memory and written in batches by a flusher thread,
//! so a worker pays no `write(2)` per connection and does not stall while a
//! slow reader of stderr (a full pipe, a paused pager) catches up. Every
//! other line (warnings, errors, lifecycle events) is written at once by the
//! thread that logs it, after the lines gathered before it: the order on
//! stderr is the order of the events.
//!
//! Nothing is dropped. A batch is written when it is `BATCH_BYTES` long or
//! as old as the flush interval (`--log-flush-interval`), whichever comes
//! first; past `MAX_PENDING` bytes (the reader has stalled) the logging
//! thread writes them itself and waits for the reader, as it would without
//! batching. Lines still gathered when the process is killed with SIGKILL
//! are lost (at most one interval's worth); the binary calls
//! [`LogOutput::flush`] before it exits.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// The target of the per-connection access-log event.
pub const ACCESS_TARGET: &str = "sni_router::access";

/// Write a batch once this much is gathered.
const BATCH_BYTES: usize = 64 * 1024;
/// Gathered bytes beyond which the logging thread writes them itself.
const MAX_PENDING: usize = 4 * 1024 * 1024;

/// Where log lines go: a writer (stderr in the binary) behind a batcher.
/// Cloning gives another handle to the same output.
#[derive(Clone)]
pub struct LogOutput {
    shared: Arc<Shared>,
}

struct Shared {
    flush_after: Duration,
    /// Held while writing to `out`, so batches and immediate lines keep
    /// their order. Taken before `pending` when both are needed.
    out: Mutex<Box<dyn Write + Send>>,
    pending: Mutex<Pending>,
    /// Wakes the flusher: a first line gathered, a full batch, shutdown.
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The flusher waits for a first line; the next one must wake it. Kept
    /// so that gathering a line costs no futex call while it is already up.
    flusher_waiting: bool,
    /// A full batch: the flusher should not wait out the interval.
    full: bool,
    closed: bool,
}

impl LogOutput {
    /// Batch lines for `out`, each batch written at most `flush_after`
    /// after its first line; starts the flusher thread.
    pub fn new(out: impl Write + Send + 'static, flush_after: Duration) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            flush_after,
            out: Mutex::new(Box::new(out)),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let flusher = shared.clone();
        thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || flusher.run_flusher())?;
        Ok(LogOutput { shared })
    }

    /// Write every gathered line now.
    pub fn flush(&self) {
        self.shared.write_gathered(&mut lock(&self.shared.out), &[]);
    }

    /// [`LogOutput::flush`] unless another thread is writing (a panic hook
    /// must not wait for the lock its own thread may hold).
    pub fn try_flush(&self) {
        if let Ok(mut out) = self.shared.out.try_lock() {
            self.shared.write_gathered(&mut out, &[]);
        }
    }

    /// Flush, and stop the flusher thread (later lines are written at once).
    pub fn close(&self) {
        lock(&self.shared.pending).closed = true;
        self.shared.wake.notify_all();
        self.flush();
    }

    /// Take one formatted line.
    fn write_line(&self, line: &[u8], batched: bool) {
        if batched {
            let mut pending = lock(&self.shared.pending);
            if !pending.closed && pending.bytes.len() + line.len() <= MAX_PENDING {
                pending.bytes.extend_from_slice(line);
                let full = pending.bytes.len() >= BATCH_BYTES;
                // Wake the flusher only when it sleeps with nothing to do or
                // a batch has filled: once per batch, not once per line.
                if pending.flusher_waiting || (full && !pending.full) {
                    pending.flusher_waiting = false;
                    pending.full |= full;
                    drop(pending);
                    self.shared.wake.notify_one();
                }
                return;
            }
        }
        self.shared.write_gathered(&mut lock(&self.shared.out), line);
    }
}

impl Shared {
    /// Write everything gathered so far, then `line`, to `out` (held by the
    /// caller: batches and immediate lines keep their order). Errors have
    /// nowhere to be reported and are ignored, as the default tracing writer
    /// ignores them.
    fn write_gathered(&self, out: &mut Box<dyn Write + Send>, line: &[u8]) {
        let batch = {
            let mut pending = lock(&self.pending);
            pending.full = false;
            std::mem::take(&mut pending.bytes)
        };
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
        }
        if !line.is_empty() {
            let _ = out.write_all(line);
        }
        let _ = out.flush();
    }

    fn run_flusher(&self) {
        loop {
            let mut pending = lock(&self.pending);
            while pending.bytes.is_empty() && !pending.closed {
                pending.flusher_waiting = true;
                pending = wait(&self.wake, pending);
            }
            if pending.closed {
                return;
            }
            // Let the batch grow until it is full or `flush_after` old.
            if !pending.full {
                pending = self
                    .wake
                    .wait_timeout_while(pending, self.flush_after, |p| !p.full && !p.closed)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            }
            drop(pending);
            self.write_gathered(&mut lock(&self.out), &[]);
        }
    }
}

/// A poisoned lock only means a thread panicked while logging; the bytes
/// are still bytes.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wait<'a>(condvar: &Condvar, guard: MutexGuard<'a, Pending>) -> MutexGuard<'a, Pending> {
    condvar.wait(guard).unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer for one event: tracing-subscriber formats the whole line and
/// hands it over in one `write_all`.
pub struct LineWriter {
    output: LogOutput,
    batched: bool,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write_line(buf, self.batched);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            output: self.clone(),
            batched: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        let batched = meta.target() == ACCESS_TARGET && *meta.level() == tracing::Level::INFO;
        LineWriter {
            output: self.clone(),
            batched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Long enough that no test thread is descheduled for that long
    /// between two lines it means to land in one batch.
    const INTERVAL: Duration = Duration::from_millis(300);

    /// A writer tests can read back; counts `write_all` calls.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>, Arc<Mutex<usize>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            *self.1.lock().unwrap() += 1;
            self.write(buf).map(drop)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
        fn writes(&self) -> usize {
            *self.1.lock().unwrap()
        }
    }

    fn line(output: &LogOutput, text: &str, batched: bool) {
        output.write_line(text.as_bytes(), batched);
    }

    /// Wait (up to 5 s) until `sink` holds at least `len` bytes; how long it took.
    fn wait_for(sink: &Sink, len: usize) -> Duration {
        let start = Instant::now();
        while sink.text().len() < len && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(1));
        }
        start.elapsed()
    }

    #[test]
    fn access_lines_wait_for_a_batch_and_are_written_soon_after() {
        let sink = Sink::default();
        let output = LogOutput::new(sink.clone(), INTERVAL).unwrap();
        line(&output, "a1\n", true);
        line(&output, "a2\n", true);
        assert_eq!(sink.text(), "", "gathered, not written per line");
        let took = wait_for(&sink, 1);
        assert_eq!(sink.text(), "a1\na2\n");
        assert_eq!(sink.writes(), 1, "one write for the batch");
        assert!(took < INTERVAL * 3, "took {took:?}");
    }

    #[test]
    fn any_other_line_is_written_at_once_after_the_gathered_ones() {
        let sink = Sink::default();
        let output = LogOutput::new(sink.clone(), INTERVAL).unwrap();
        line(&output, "a1\n", true);
        line(&output, "warn\n", false);
        assert_eq!(sink.text(), "a1\nwarn\n");
        line(&output, "a2\n", true);
        output.flush();
        assert_eq!(sink.text(), "a1\nwarn\na2\n");
    }

    #[test]
    fn a_full_batch_is_written_without_waiting_out_the_interval() {
        let sink = Sink::default();
        let output = LogOutput::new(sink.clone(), INTERVAL).unwrap();
        // Park the flusher in its timed wait, then fill a batch.
        line(&output, "first\n", true);
        thread::sleep(Duration::from_millis(2));
        let big = "x".repeat(1023) + "\n";
        for _ in 0..BATCH_BYTES / big.len() + 1 {
            line(&output, &big, true);
        }
        let took = wait_for(&sink, BATCH_BYTES);
        assert!(took < INTERVAL / 2, "waited {took:?} for a full batch");
        assert!(sink.text().starts_with("first\n"));
    }

    #[test]
    fn past_the_cap_the_logging_thread_writes_and_loses_nothing() {
        /// Blocks every write until released, like a reader that stalled.
        struct Stalled(Arc<Mutex<Vec<u8>>>, Arc<(Mutex<bool>, Condvar)>);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let (open, cv) = &*self.1;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let written = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let output = LogOutput::new(Stalled(written.clone(), gate.clone()), INTERVAL).unwrap();
        let chunk = "y".repeat(4095) + "\n";
        let lines = MAX_PENDING / chunk.len() * 2;
        let writer = {
            let output = output.clone();
            let chunk = chunk.clone();
            thread::spawn(move || {
                for _ in 0..lines {
                    line(&output, &chunk, true);
                }
            })
        };
        thread::sleep(Duration::from_millis(100));
        assert!(
            !writer.is_finished(),
            "past the cap the logging thread waits for the reader"
        );
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        writer.join().unwrap();
        output.flush();
        assert_eq!(written.lock().unwrap().len(), lines * chunk.len());
    }

    #[test]
    fn only_info_access_events_are_batched() {
        let sink = Sink::default();
        let output = LogOutput::new(sink.clone(), INTERVAL).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(output.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "sni_router::access", "first connection");
            assert_eq!(sink.text(), "", "an info access event waits for its batch");
            tracing::warn!(target: "sni_router::access", "second connection");
        });
        let text = sink.text();
        let first = text.find("first connection").expect("written before the warning");
        let second = text.find("second connection").expect("a warning is written at once");
        assert!(first < second);
    }
}
