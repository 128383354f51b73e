//! Admission of connections still sending their ClientHello: a cap for all
//! sources together (`--max-pending-hellos`) and, optionally, one per source
//! address (`--max-pending-hellos-per-source`), so one slow or hostile host
//! cannot fill the shared cap and lock everyone else out.
//!
//! A permit is taken at accept and released when the hello is complete (or
//! the connection ends), by dropping it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::session::Reject;

/// The caps; shared by every listener.
#[derive(Debug)]
pub struct PendingHellos {
    all: Option<(Arc<Semaphore>, usize)>,
    per_source: Option<Arc<PerSource>>,
}

/// Pending hellos per source address.
#[derive(Debug)]
struct PerSource {
    max: usize,
    // Only sources with a pending hello are present, so the map is bounded
    // by the shared cap (or the open connections) and needs no sweeping.
    pending: Mutex<HashMap<IpAddr, usize>>,
}

/// Held while a connection sends its ClientHello; dropping it gives the
/// slots back. Boxed: a connection's task keeps room for it for its whole
/// life, so it costs one pointer there; nothing is allocated when both caps
/// are off.
#[derive(Debug)]
pub struct HelloPermit {
    _slots: Option<Box<Slots>>,
}

/// The slots a permit holds.
#[derive(Debug)]
struct Slots {
    _all: Option<OwnedSemaphorePermit>,
    source: Option<(Arc<PerSource>, IpAddr)>,
}

impl PendingHellos {
    /// Caps of `all` and `per_source` pending hellos; 0 turns a cap off.
    pub fn new(all: usize, per_source: usize) -> Self {
        Self {
            all: (all > 0).then(|| (Arc::new(Semaphore::new(all)), all)),
            per_source: (per_source > 0).then(|| {
                Arc::new(PerSource {
                    max: per_source,
                    pending: Mutex::default(),
                })
            }),
        }
    }

    /// A permit for a new connection from `source`, or why not. The source's
    /// own cap is checked first, so a host over it is told so even when the
    /// shared cap is full too.
    pub fn admit(&self, source: IpAddr) -> Result<HelloPermit, Reject> {
        if self.per_source.is_none() && self.all.is_none() {
            return Ok(HelloPermit { _slots: None });
        }
        let mut permit = Slots {
            _all: None,
            source: None,
        };
        if let Some(per_source) = &self.per_source {
            let mut pending = per_source.pending.lock().unwrap_or_else(|e| e.into_inner());
            let count = pending.entry(source).or_insert(0);
            if *count >= per_source.max {
                return Err(Reject::SourceHelloLimit(source, per_source.max));
            }
            *count += 1;
            permit.source = Some((per_source.clone(), source));
        }
        if let Some((semaphore, max)) = &self.all {
            // On refusal, dropping `permit` gives the source's slot back.
            permit._all = Some(
                semaphore
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Reject::HelloLimit(*max))?,
            );
        }
        Ok(HelloPermit {
            _slots: Some(Box::new(permit)),
        })
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        if let Some((per_source, source)) = self.source.take() {
            let mut pending = per_source.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = pending.get_mut(&source) {
                *count -= 1;
                if *count == 0 {
                    pending.remove(&source);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_source_over_its_cap_leaves_room_for_others() {
        let gate = PendingHellos::new(10, 2);
        let a1 = gate.admit(ip("10.0.0.1")).unwrap();
        let _a2 = gate.admit(ip("10.0.0.1")).unwrap();
        let refused = gate.admit(ip("10.0.0.1")).unwrap_err();
        assert_eq!(refused.reason(), "source_hello_limit");
        assert_eq!(
            refused.to_string(),
            "10.0.0.1 already has 2 connections waiting for their ClientHello"
        );
        let _b = gate.admit(ip("10.0.0.2")).unwrap();
        // A finished hello frees its source's slot.
        drop(a1);
        let _a3 = gate.admit(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn the_shared_cap_still_holds_and_a_refusal_keeps_no_slot() {
        let gate = PendingHellos::new(2, 2);
        let _a = gate.admit(ip("10.0.0.1")).unwrap();
        let b = gate.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(gate.admit(ip("10.0.0.3")).unwrap_err().reason(), "hello_limit");
        drop(b);
        // 10.0.0.3's refused attempt did not keep a per-source slot.
        let _c1 = gate.admit(ip("10.0.0.3")).unwrap();
        assert!(gate.per_source.as_ref().unwrap().pending.lock().unwrap().len() == 2);
    }

    #[test]
    fn caps_of_zero_admit_everyone() {
        let gate = PendingHellos::new(0, 0);
        let permits: Vec<_> = (0..5000).map(|_| gate.admit(ip("::1")).unwrap()).collect();
        assert_eq!(permits.len(), 5000);
    }

    #[test]
    fn sources_without_pending_hellos_are_forgotten() {
        let gate = PendingHellos::new(0, 1);
        for i in 0..100u8 {
            drop(gate.admit(IpAddr::from([10, 0, 1, i])).unwrap());
        }
        assert!(gate.per_source.as_ref().unwrap().pending.lock().unwrap().is_empty());
    }
}
