//! What crosses between the host and a device backend: bytes each way, synchronisations and
//! kernel launches. Device backends count them ([`super::Backend::traffic`]); the CPU backend,
//! whose tensors are host memory, has none to count. `train --profile` prints them per step,
//! and the device-residency tests hold the trainer to a budget with them.

/// Totals since the backend was created (or a snapshot's difference, [`Traffic::since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes copied host to device (tensors, index and target lists).
    pub h2d_bytes: u64,
    /// Bytes copied device to host.
    pub d2h_bytes: u64,
    /// Times the host waited for the device (each download waits for the work before it).
    pub syncs: u64,
    /// Kernel launches, each matrix-product call counted as one.
    pub launches: u64,
}

impl Traffic {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            h2d_bytes: self.h2d_bytes - earlier.h2d_bytes,
            d2h_bytes: self.d2h_bytes - earlier.d2h_bytes,
            syncs: self.syncs - earlier.syncs,
            launches: self.launches - earlier.launches,
        }
    }
}

/// Counters a device backend shares between its clones.
#[derive(Debug, Default)]
pub struct TrafficCounters {
    h2d_bytes: std::sync::atomic::AtomicU64,
    d2h_bytes: std::sync::atomic::AtomicU64,
    syncs: std::sync::atomic::AtomicU64,
    launches: std::sync::atomic::AtomicU64,
}

impl TrafficCounters {
    fn add(c: &std::sync::atomic::AtomicU64, n: u64) {
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// `bytes` copied to the device.
    pub fn upload(&self, bytes: usize) {
        Self::add(&self.h2d_bytes, bytes as u64);
    }

    /// `bytes` copied back, after waiting for the device.
    pub fn download(&self, bytes: usize) {
        Self::add(&self.d2h_bytes, bytes as u64);
        Self::add(&self.syncs, 1);
    }

    /// A wait for the device with no copy.
    pub fn sync(&self) {
        Self::add(&self.syncs, 1);
    }

    /// One kernel launch (or one library call that launches).
    pub fn launch(&self) {
        Self::add(&self.launches, 1);
    }

    /// The totals so far.
    pub fn snapshot(&self) -> Traffic {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Traffic {
            h2d_bytes: get(&self.h2d_bytes),
            d2h_bytes: get(&self.d2h_bytes),
            syncs: get(&self.syncs),
            launches: get(&self.launches),
        }
    }
}
