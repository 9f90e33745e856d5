//! Outer compression layer: detect zlib / zstd / xz / bare zip by magic bytes, decompress with
//! a hard output cap (decompression-bomb guard), and compress for export.
//!
//! Why: challenge artifacts are `torch.save` zips wrapped in `zlib.compress(level=9)` (baseline),
//! zstd level 22 (int6 records) or `lzma.compress` (xz). The decoders here must run on wasm32,
//! so zstd falls back to the pure-Rust `ruzstd` when the `zstd-native` feature is off.

use std::borrow::Cow;
use std::io::Write;

use super::{err, Compression};
use crate::Result;

/// Default of the largest decompressed payload accepted (512 MiB; a 16 MB artifact decompresses
/// to 20-50 MB). The limit in force is [`crate::limits::PAYLOAD_BYTES`]
/// (`PGOLF_MAX_PAYLOAD_BYTES`).
pub const MAX_DECOMPRESSED_BYTES: usize = 512 << 20;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];

/// Identifies the outer compression from the first bytes of the file.
pub fn detect(bytes: &[u8]) -> Result<Compression> {
    if bytes.is_empty() {
        return Err(err("empty file"));
    }
    if bytes.starts_with(&ZSTD_MAGIC) {
        return Ok(Compression::Zstd);
    }
    if bytes.starts_with(&XZ_MAGIC) {
        return Ok(Compression::Xz);
    }
    if bytes.starts_with(b"PK") {
        return Ok(Compression::None);
    }
    if bytes.len() >= 2 {
        let (cmf, flg) = (bytes[0], bytes[1]);
        // RFC 1950: CM = 8 (deflate), CINFO <= 7, header checksum, no preset dictionary.
        if cmf & 0x0F == 8 && cmf >> 4 <= 7 && (u16::from(cmf) * 256 + u16::from(flg)) % 31 == 0 {
            if flg & 0x20 != 0 {
                return Err(err("zlib stream with a preset dictionary is not supported"));
            }
            return Ok(Compression::Zlib);
        }
    }
    Err(err(format!(
        "unrecognized file (first bytes {:02x?}): expected zlib, zstd, xz or a zip archive",
        &bytes[..bytes.len().min(6)]
    )))
}

/// Detects the compression and returns the decompressed `torch.save` payload (borrowed when the
/// file is a bare zip). Output is capped at [`crate::limits::PAYLOAD_BYTES`].
pub fn decompress(bytes: &[u8]) -> Result<(Compression, Cow<'_, [u8]>)> {
    decompress_with_limit(bytes, crate::limits::PAYLOAD_BYTES.get_usize())
}

/// [`decompress`] with an explicit output cap in bytes.
pub fn decompress_with_limit(bytes: &[u8], limit: usize) -> Result<(Compression, Cow<'_, [u8]>)> {
    let kind = detect(bytes)?;
    let out = match kind {
        Compression::None => Cow::Borrowed(bytes),
        Compression::Zlib => Cow::Owned(zlib_decompress(bytes, limit)?),
        Compression::Zstd => Cow::Owned(zstd_decompress(bytes, limit)?),
        Compression::Xz => Cow::Owned(xz_decompress(bytes, limit)?),
    };
    Ok((kind, out))
}

fn bomb(limit: usize) -> crate::Error {
    err(crate::limits::PAYLOAD_BYTES.exceeded_at(
        "decompressed payload (decompression bomb guard)",
        limit as u64,
    ))
}

/// A `Write` sink that refuses to grow past `limit` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("output cap exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads `r` to the end, failing once more than `limit` bytes come out.
#[cfg(feature = "zstd-native")]
fn read_capped(mut r: impl std::io::Read, limit: usize, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let complete = crate::limits::read_bounded(&mut r, &mut out, limit)
        .map_err(|e| err(format!("{what} decode failed: {e}")))?;
    if !complete {
        return Err(bomb(limit));
    }
    Ok(out)
}

/// Decodes one complete zlib stream; truncation, checksum mismatch and trailing bytes are errors.
pub fn zlib_decompress(bytes: &[u8], limit: usize) -> Result<Vec<u8>> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut d = Decompress::new(true);
    let cap = limit.saturating_add(1); // one byte past the cap tells a bomb from an exact fit
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len().saturating_mul(2).min(cap));
    loop {
        if out.len() >= cap {
            return Err(bomb(limit));
        }
        if out.len() == out.capacity() {
            out.reserve_exact(out.len().max(1 << 16).min(cap - out.len()));
        }
        let before = (d.total_in(), d.total_out());
        let in_pos = d.total_in() as usize;
        let status = d
            .decompress_vec(&bytes[in_pos..], &mut out, FlushDecompress::None)
            .map_err(|e| err(format!("zlib decode failed: {e}")))?;
        if out.len() > limit {
            return Err(bomb(limit));
        }
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError => {
                if (d.total_in(), d.total_out()) == before {
                    return Err(err("zlib stream is truncated"));
                }
            }
        }
    }
    if d.total_in() as usize != bytes.len() {
        return Err(err(format!(
            "{} trailing bytes after the zlib stream",
            bytes.len() - d.total_in() as usize
        )));
    }
    Ok(out)
}

/// Decodes all zstd frames in `bytes` (native libzstd when `zstd-native` is on, else ruzstd).
pub fn zstd_decompress(bytes: &[u8], limit: usize) -> Result<Vec<u8>> {
    #[cfg(feature = "zstd-native")]
    {
        zstd_decompress_native(bytes, limit)
    }
    #[cfg(not(feature = "zstd-native"))]
    {
        zstd_decompress_pure(bytes, limit)
    }
}

/// zstd decode through libzstd (verifies the content checksum when present).
#[cfg(feature = "zstd-native")]
pub fn zstd_decompress_native(bytes: &[u8], limit: usize) -> Result<Vec<u8>> {
    let dec = zstd::stream::read::Decoder::with_buffer(bytes)
        .map_err(|e| err(format!("zstd decode failed: {e}")))?;
    read_capped(dec, limit, "zstd")
}

/// zstd decode in pure Rust (ruzstd); checks content size and checksum when the frame has them.
pub fn zstd_decompress_pure(bytes: &[u8], limit: usize) -> Result<Vec<u8>> {
    use ruzstd::decoding::StreamingDecoder;
    let mut src: &[u8] = bytes;
    let mut out = Vec::new();
    while !src.is_empty() {
        let mut dec =
            StreamingDecoder::new(&mut src).map_err(|e| err(format!("zstd frame header: {e}")))?;
        let start = out.len();
        let complete = crate::limits::read_bounded(&mut dec, &mut out, limit)
            .map_err(|e| err(format!("zstd decode failed: {e}")))?;
        if !complete {
            return Err(bomb(limit));
        }
        let n = out.len() - start;
        let fd = dec.into_frame_decoder();
        if !fd.is_finished() {
            return Err(err("zstd frame is truncated"));
        }
        let declared = fd.content_size();
        if declared != 0 && declared != n as u64 {
            return Err(err(format!(
                "zstd frame declares {declared} bytes but decodes to {n}"
            )));
        }
        if let (Some(a), Some(b)) = (fd.get_checksum_from_data(), fd.get_calculated_checksum()) {
            if a != b {
                return Err(err("zstd content checksum mismatch"));
            }
        }
    }
    Ok(out)
}

/// Decodes an xz container (lzma-rs verifies the block checks and index).
///
/// lzma-rs decodes each block into memory before writing it out (and keeps the LZMA2
/// dictionary, the whole block, beside it), so a cap on its output sink comes too late: a few
/// hundred kB of xz can expand to gigabytes first. [`xz_declared_size`] therefore adds up what
/// the stream's LZMA2 chunk headers say they unpack to, without decoding, and refuses the file
/// before decoding when that is over `limit`; decoding then holds at most about twice `limit`.
pub fn xz_decompress(bytes: &[u8], limit: usize) -> Result<Vec<u8>> {
    xz_declared_size(bytes, limit)?;
    let mut w = CappedWriter {
        buf: Vec::new(),
        limit,
        exceeded: false,
    };
    let mut input = std::io::BufReader::new(bytes);
    match lzma_rs::xz_decompress(&mut input, &mut w) {
        Ok(()) => Ok(w.buf),
        Err(_) if w.exceeded => Err(bomb(limit)),
        Err(e) => Err(err(format!("xz decode failed: {e}"))),
    }
}

/// What an xz stream's blocks unpack to, at most, read from the LZMA2 chunk headers alone
/// (each chunk names its unpacked size, and lzma-rs holds every chunk to it). Walks the stream
/// header, each block header, its chunks, padding and check, up to the index; fails as soon as
/// the total passes `limit`, or on a structure it cannot walk. Work is linear in the file size.
pub fn xz_declared_size(bytes: &[u8], limit: usize) -> Result<u64> {
    let short = || err("xz stream is truncated");
    let byte = |at: usize| bytes.get(at).copied().ok_or_else(short);
    let be16 =
        |at: usize| -> Result<u64> { Ok(u64::from(byte(at)?) << 8 | u64::from(byte(at + 1)?)) };
    if !bytes.starts_with(&XZ_MAGIC) || bytes.len() < 12 {
        return Err(err("not an xz stream (bad stream header)"));
    }
    // Check field sizes by check id (xz spec 3.1.2), 0..=15.
    const CHECK_SIZE: [usize; 16] = [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64];
    let check = CHECK_SIZE[usize::from(bytes[7] & 0x0F)];
    let mut total: u64 = 0;
    let mut pos = 12usize;
    loop {
        let block = pos;
        let size_byte = byte(pos)?;
        if size_byte == 0 {
            return Ok(total); // the index follows: lzma-rs checks it against the blocks
        }
        pos += (usize::from(size_byte) + 1) * 4;
        loop {
            let control = byte(pos)?;
            let unpacked = match control {
                0x00 => {
                    pos += 1;
                    break;
                }
                0x01 | 0x02 => {
                    let n = be16(pos + 1)? + 1;
                    pos += 3 + n as usize;
                    n
                }
                0x03..=0x7F => {
                    return Err(err(format!(
                        "xz: invalid LZMA2 chunk control byte 0x{control:02x}"
                    )))
                }
                _ => {
                    let unpacked = (u64::from(control & 0x1F) << 16 | be16(pos + 1)?) + 1;
                    let packed = be16(pos + 3)? + 1;
                    let props = usize::from((control >> 5) & 3 >= 2);
                    pos += 5 + props + packed as usize;
                    unpacked
                }
            };
            total += unpacked;
            if total > limit as u64 {
                return Err(bomb(limit));
            }
        }
        pos += (4 - (pos - block) % 4) % 4 + check;
        if pos > bytes.len() {
            return Err(short());
        }
    }
}

/// Compresses a payload the way the challenge scripts do: zlib level 9, zstd level 22 (only with
/// the `zstd-native` feature; otherwise an error), xz (lzma-rs encoder), or `None` (copy).
pub fn compress(data: &[u8], kind: Compression) -> Result<Vec<u8>> {
    match kind {
        Compression::None => Ok(data.to_vec()),
        Compression::Zlib => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
            enc.write_all(data)
                .and_then(|_| enc.finish())
                .map_err(|e| err(format!("zlib encode failed: {e}")))
        }
        Compression::Zstd => zstd_compress(data),
        Compression::Xz => {
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut std::io::BufReader::new(data), &mut out)
                .map_err(|e| err(format!("xz encode failed: {e}")))?;
            Ok(out)
        }
    }
}

#[cfg(feature = "zstd-native")]
fn zstd_compress(data: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(data, 22).map_err(|e| err(format!("zstd encode failed: {e}")))
}

#[cfg(not(feature = "zstd-native"))]
fn zstd_compress(_data: &[u8]) -> Result<Vec<u8>> {
    Err(err(
        "zstd level-22 compression needs the `zstd-native` feature (pure-Rust build decodes only)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        // Compressible but not trivial.
        (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 29) as u8 ^ (i / 97) as u8)
            .collect()
    }

    #[test]
    fn detects_magics() {
        assert_eq!(detect(b"PK\x03\x04rest").unwrap(), Compression::None);
        assert_eq!(detect(&[0x78, 0xDA, 0]).unwrap(), Compression::Zlib);
        assert_eq!(detect(&[0x78, 0x9C, 0]).unwrap(), Compression::Zlib);
        assert_eq!(
            detect(&[0x28, 0xB5, 0x2F, 0xFD, 0]).unwrap(),
            Compression::Zstd
        );
        assert_eq!(detect(&XZ_MAGIC).unwrap(), Compression::Xz);
        assert!(detect(&[]).is_err());
        assert!(detect(&[0x78, 0x00]).is_err()); // bad zlib header checksum
        assert!(detect(b"hello").is_err());
    }

    #[test]
    fn zlib_round_trip_and_truncation() {
        let data = sample();
        let c = compress(&data, Compression::Zlib).unwrap();
        let (k, d) = decompress(&c).unwrap();
        assert_eq!(k, Compression::Zlib);
        assert_eq!(&*d, &data[..]);
        for cut in [2, 10, c.len() / 2, c.len() - 1] {
            assert!(decompress(&c[..cut]).is_err(), "prefix {cut} accepted");
        }
        let mut trailing = c.clone();
        trailing.push(0);
        assert!(decompress(&trailing).is_err());
        assert!(decompress(&[]).is_err());
    }

    #[test]
    fn xz_round_trip_and_truncation() {
        let data = sample();
        let c = compress(&data, Compression::Xz).unwrap();
        let (k, d) = decompress(&c).unwrap();
        assert_eq!(k, Compression::Xz);
        assert_eq!(&*d, &data[..]);
        assert!(decompress(&c[..c.len() - 3]).is_err());
    }

    #[cfg(feature = "zstd-native")]
    #[test]
    fn zstd_round_trip_both_decoders() {
        let data = sample();
        let c = compress(&data, Compression::Zstd).unwrap();
        let (k, d) = decompress(&c).unwrap();
        assert_eq!(k, Compression::Zstd);
        assert_eq!(&*d, &data[..]);
        assert_eq!(
            zstd_decompress_pure(&c, MAX_DECOMPRESSED_BYTES).unwrap(),
            data
        );
        for cut in [4, 10, c.len() / 2, c.len() - 1] {
            assert!(
                zstd_decompress_native(&c[..cut], 1 << 20).is_err(),
                "native {cut}"
            );
            assert!(
                zstd_decompress_pure(&c[..cut], 1 << 20).is_err(),
                "pure {cut}"
            );
        }
    }

    #[cfg(not(feature = "zstd-native"))]
    #[test]
    fn zstd_compress_needs_native() {
        assert!(compress(b"abc", Compression::Zstd).is_err());
    }

    #[test]
    fn bomb_guard() {
        let zeros = vec![0u8; 1 << 20];
        let c = compress(&zeros, Compression::Zlib).unwrap();
        let e = decompress_with_limit(&c, 1000).unwrap_err().to_string();
        assert!(e.contains("bomb"), "{e}");
        assert_eq!(decompress_with_limit(&c, 1 << 20).unwrap().1.len(), 1 << 20);
        let x = compress(&zeros, Compression::Xz).unwrap();
        assert!(decompress_with_limit(&x, 1000).is_err());
        #[cfg(feature = "zstd-native")]
        {
            let z = compress(&zeros, Compression::Zstd).unwrap();
            assert!(decompress_with_limit(&z, 1000)
                .unwrap_err()
                .to_string()
                .contains("bomb"));
            assert!(zstd_decompress_pure(&z, 1000)
                .unwrap_err()
                .to_string()
                .contains("bomb"));
        }
    }

    #[test]
    fn bare_zip_is_borrowed() {
        let b = b"PK\x05\x06";
        let (k, d) = decompress(b).unwrap();
        assert_eq!(k, Compression::None);
        assert!(matches!(d, Cow::Borrowed(_)));
    }
}
