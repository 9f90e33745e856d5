//! The command stream: every op records one compute pass into a single pending command encoder;
//! it is submitted when enough work has queued up (so the GPU starts while the host records the
//! rest) and whenever the host needs data back. Downloads copy into a fresh `MAP_READ` staging
//! buffer, submit and map: natively the host then waits (`read_bytes`); in a browser, which
//! must not wait, the caller takes the bytes once the mapping's callback ran (`start_read`,
//! `finish_read`). wgpu errors recorded since the last sync turn into `Err` here.

use super::device::Gpu;
use super::pipelines::Pipeline;
use crate::{Error, Result};
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Passes recorded before an automatic submit.
const PASSES_PER_SUBMIT: usize = 48;

#[derive(Default)]
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    passes: usize,
}

/// One in-order stream of GPU work.
pub(crate) struct Stream {
    pending: Mutex<Pending>,
}

/// Splits `groups` workgroups into a 2-D grid within the per-dimension limit (kernels flatten
/// `wid.y * nwg.x + wid.x` and skip the tail).
pub(crate) fn grid(groups: u64, max_dim: u32) -> [u32; 3] {
    let max_dim = max_dim.max(1) as u64;
    let x = groups.clamp(1, max_dim);
    let y = groups.div_ceil(x).max(1);
    [x as u32, y as u32, 1]
}

impl Stream {
    pub fn new() -> Self {
        Stream {
            pending: Mutex::new(Pending::default()),
        }
    }

    fn with_encoder<R>(&self, gpu: &Gpu, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let enc = p.encoder.get_or_insert_with(|| {
            gpu.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("pgolf-rt"),
                })
        });
        let r = f(enc);
        p.passes += 1;
        if p.passes >= PASSES_PER_SUBMIT {
            let enc = p.encoder.take();
            p.passes = 0;
            if let Some(enc) = enc {
                gpu.queue.submit(Some(enc.finish()));
            }
        }
        r
    }

    /// Records one dispatch of `pipe` with a fresh uniform block `params` (u32 words, f32 as
    /// bits) at binding 0 and `bufs` at bindings 1...
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        pipe: &Pipeline,
        params: &[u32],
        bufs: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        let mut words = params.to_vec();
        words.resize(params.len().next_multiple_of(4).max(4), 0);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let uniform = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("pgolf-rt params"),
                contents: &bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        entries.extend(bufs.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: b.as_entire_binding(),
        }));
        let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.layout,
            entries: &entries,
        });
        self.with_encoder(gpu, |enc| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&pipe.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        });
    }

    /// Records a buffer-to-buffer copy.
    pub fn copy(&self, gpu: &Gpu, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.with_encoder(gpu, |enc| enc.copy_buffer_to_buffer(src, 0, dst, 0, bytes));
    }

    /// Submits whatever is pending.
    pub fn flush(&self, gpu: &Gpu) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.passes = 0;
        if let Some(enc) = p.encoder.take() {
            gpu.queue.submit(Some(enc.finish()));
        }
    }

    /// Err with the first asynchronous wgpu error, if one was reported.
    pub fn check(&self, gpu: &Gpu) -> Result<()> {
        let e = gpu.error.lock().unwrap_or_else(|p| p.into_inner()).take();
        match e {
            Some(e) => Err(Error::Backend(format!("wgpu: {e}"))),
            None => Ok(()),
        }
    }

    /// Copies the first `count` bytes of `src` (rounded up to 4) to the host, waiting for the
    /// GPU: natively a [`Stream::start_read`], a blocking device poll and a
    /// [`Stream::finish_read`]. In WebAssembly nothing may wait for the browser's GPU, so it is
    /// an error there: read with `start_read` and `finish_read` from the event loop.
    pub fn read_bytes(&self, gpu: &Gpu, src: &wgpu::Buffer, count: usize) -> Result<Vec<u8>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = (gpu, src);
            Err(Error::Backend(
                "wgpu in WebAssembly: a download cannot wait for the browser's GPU; \
                 read it with WgpuBackend::start_download and finish_download"
                    .into(),
            ))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let rb = self.start_read(gpu, src, count, || {})?;
            gpu.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Backend(format!("wgpu: device poll failed: {e}")))?;
            self.finish_read(gpu, rb)
        }
    }

    /// Starts copying the first `count` bytes of `src` (rounded up to 4) to the host without
    /// waiting: submits the pending work and a copy into a fresh `MAP_READ` buffer, and asks for
    /// it mapped; `on_ready` runs once it is (or failed): in a browser from its event loop,
    /// natively during a device poll. Then [`Stream::finish_read`] takes the bytes.
    pub fn start_read(
        &self,
        gpu: &Gpu,
        src: &wgpu::Buffer,
        count: usize,
        on_ready: impl FnOnce() + wgpu::WasmNotSend + 'static,
    ) -> Result<Readback> {
        let bytes = (count as u64).next_multiple_of(4).max(4);
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pgolf-rt readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.copy(gpu, src, &staging, bytes);
        self.flush(gpu);
        let state = Arc::new(Mutex::new(MapState::Waiting));
        let slot = state.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = match r {
                Ok(()) => MapState::Mapped,
                Err(e) => MapState::Failed(e.to_string()),
            };
            on_ready();
        });
        Ok(Readback {
            staging,
            count,
            state,
        })
    }

    /// The bytes of a [`Readback`] whose copy arrived; an error while it has not (or when the
    /// GPU reported an error since the last synchronisation).
    pub fn finish_read(&self, gpu: &Gpu, rb: Readback) -> Result<Vec<u8>> {
        self.check(gpu)?;
        let state = std::mem::replace(
            &mut *rb.state.lock().unwrap_or_else(|p| p.into_inner()),
            MapState::Waiting,
        );
        match state {
            MapState::Mapped => {}
            MapState::Waiting => {
                return Err(Error::Backend(
                    "wgpu: the download has not arrived yet (wait for its on_ready)".into(),
                ))
            }
            MapState::Failed(e) => {
                return Err(Error::Backend(format!(
                    "wgpu: cannot map the readback buffer: {e}"
                )))
            }
        }
        let out = {
            let view = rb
                .staging
                .get_mapped_range(..)
                .map_err(|e| Error::Backend(format!("wgpu: mapped range: {e}")))?;
            view[..rb.count].to_vec()
        };
        rb.staging.unmap();
        Ok(out)
    }
}

/// Where a [`Readback`]'s mapping stands.
enum MapState {
    Waiting,
    Mapped,
    Failed(String),
}

/// A copy of a buffer on its way to the host, from [`Stream::start_read`].
pub(crate) struct Readback {
    staging: wgpu::Buffer,
    count: usize,
    state: Arc<Mutex<MapState>>,
}

impl Readback {
    /// Whether the copy arrived (or failed): [`Stream::finish_read`] will not wait.
    pub fn is_ready(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            MapState::Waiting
        )
    }
}
