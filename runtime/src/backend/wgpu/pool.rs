//! Buffer pool: storage buffers are recycled by exact byte size.
//!
//! The forward pass allocates the same handful of activation shapes in every layer, so when a
//! tensor drops its buffer goes back here and the next tensor of that size reuses it instead of
//! asking the driver. Reuse is safe without waiting for the GPU: every op records into one
//! in-order command stream, and wgpu orders (with barriers) a later write to a recycled buffer
//! after the earlier reads still pending in that stream. Host writes never go to a pooled buffer
//! (uploads and parameters use fresh, mapped-at-creation buffers), because `Queue::write_buffer`
//! would jump ahead of the commands not yet submitted.

use std::collections::HashMap;
use std::sync::Mutex;

/// Usage of every pooled buffer: shader storage, copy source (downloads, `copy`) and copy target.
pub(crate) const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Smallest buffer handed out (zero-sized bindings are invalid).
pub(crate) const MIN_BYTES: u64 = 16;

/// Idle bytes kept for reuse; past this, returned buffers are freed.
const MAX_IDLE_BYTES: u64 = 2 << 30;

#[derive(Default)]
struct Idle {
    by_size: HashMap<u64, Vec<wgpu::Buffer>>,
    bytes: u64,
}

/// Recycles storage buffers by size.
pub(crate) struct BufferPool {
    device: wgpu::Device,
    idle: Mutex<Idle>,
}

impl BufferPool {
    pub fn new(device: wgpu::Device) -> Self {
        BufferPool {
            device,
            idle: Mutex::new(Idle::default()),
        }
    }

    /// Rounded size of a buffer for `bytes` bytes of data.
    pub fn size_for(bytes: u64) -> u64 {
        bytes.max(MIN_BYTES).next_multiple_of(4)
    }

    /// A storage buffer of at least `bytes` bytes (contents undefined).
    pub fn get(&self, bytes: u64) -> wgpu::Buffer {
        let size = Self::size_for(bytes);
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = idle.by_size.get_mut(&size).and_then(Vec::pop) {
                idle.bytes -= size;
                return b;
            }
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pgolf-rt tensor"),
            size,
            usage: STORAGE,
            mapped_at_creation: false,
        })
    }

    /// Returns a buffer for reuse.
    pub fn put(&self, buf: wgpu::Buffer) {
        if buf.usage() != STORAGE {
            return;
        }
        let size = buf.size();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.bytes + size > MAX_IDLE_BYTES {
            return;
        }
        idle.bytes += size;
        idle.by_size.entry(size).or_default().push(buf);
    }
}
