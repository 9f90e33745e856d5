//! PyTorch's zip container: a minimal stored-only (no deflate) reader and writer.
//!
//! Why hand-written: `torch.save` writes uncompressed ("stored") entries only, with data
//! descriptors, a varying top folder (`archive/`, or the file stem) and 64-byte aligned records;
//! reading it needs nothing but the central directory, and a tiny reader keeps the crate
//! wasm32-friendly (no mmap, no threads) and borrow-based (records are slices of the payload).
//! Every entry's CRC-32 is verified, so a corrupted payload cannot load silently.
//!
//! Work is linear in the archive's size for any input: names are unique, entries (local header
//! and data) may not overlap, so each byte is CRC-checked at most once, and the entry count is
//! bounded by [`crate::limits::ZIP_ENTRIES`]. Names in messages are quoted and escaped.

use std::collections::{HashMap, HashSet};

use super::err;
use crate::Result;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| err("zip: structure runs past the end of the archive"))
}
fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| err("zip: structure runs past the end of the archive"))
}
fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| err("zip: structure runs past the end of the archive"))
}
fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| err("zip: offset does not fit in memory"))
}

/// One stored entry of a zip archive, borrowing its bytes from the archive.
#[derive(Debug, Clone)]
pub struct ZipEntry<'a> {
    pub name: String,
    pub data: &'a [u8],
}

/// Reads every entry of a stored-only zip archive, verifying the structure and CRC-32s.
pub fn read_entries(bytes: &[u8]) -> Result<Vec<ZipEntry<'_>>> {
    // End of central directory: fixed 22 bytes plus a comment that must end the file exactly.
    if bytes.len() < 22 {
        return Err(err(
            "zip: archive too short (no end-of-central-directory record)",
        ));
    }
    let lowest = bytes.len().saturating_sub(22 + 0xFFFF);
    let mut eocd = None;
    let mut pos = bytes.len() - 22;
    loop {
        if u32_at(bytes, pos)? == EOCD_SIG {
            let comment = u16_at(bytes, pos + 20)? as usize;
            if pos + 22 + comment == bytes.len() {
                eocd = Some(pos);
                break;
            }
        }
        if pos == lowest {
            break;
        }
        pos -= 1;
    }
    let eocd =
        eocd.ok_or_else(|| err("zip: end-of-central-directory record not found (truncated?)"))?;
    let disk = u16_at(bytes, eocd + 4)?;
    let cd_disk = u16_at(bytes, eocd + 6)?;
    let mut count = u64::from(u16_at(bytes, eocd + 10)?);
    let mut cd_size = u64::from(u32_at(bytes, eocd + 12)?);
    let mut cd_off = u64::from(u32_at(bytes, eocd + 16)?);
    if disk != 0 || cd_disk != 0 {
        return Err(err("zip: multi-disk archives are not supported"));
    }
    let mut cd_end = eocd;
    // ZIP64: a locator right before the EOCD points to the ZIP64 EOCD record. torch's writer
    // emits one even for small archives, so use it whenever it is there.
    let loc = eocd
        .checked_sub(20)
        .filter(|&l| u32_at(bytes, l).ok() == Some(ZIP64_LOCATOR_SIG));
    if loc.is_none() && (count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_off == 0xFFFF_FFFF) {
        return Err(err("zip: missing ZIP64 locator"));
    }
    if let Some(loc) = loc {
        let rec = to_usize(u64_at(bytes, loc + 8)?)?;
        if rec >= loc || u32_at(bytes, rec)? != ZIP64_EOCD_SIG {
            return Err(err("zip: bad ZIP64 end-of-central-directory record"));
        }
        count = u64_at(bytes, rec + 32)?;
        cd_size = u64_at(bytes, rec + 40)?;
        cd_off = u64_at(bytes, rec + 48)?;
        cd_end = rec;
    }
    let cd_off = to_usize(cd_off)?;
    let cd_size = to_usize(cd_size)?;
    if cd_off.checked_add(cd_size) != Some(cd_end) {
        return Err(err(
            "zip: central directory does not end where the end record starts",
        ));
    }
    let count = to_usize(count)?;
    crate::limits::ZIP_ENTRIES.check(count as u64, format!("zip: {count} entries"), err)?;
    if count > cd_size / 46 {
        return Err(err(format!("zip: implausible entry count {count}")));
    }
    // Pass 1: the central directory, checked against the local headers; no data is read.
    let mut entries = Vec::with_capacity(count);
    let mut spans = Vec::with_capacity(count); // (local header offset, end of data, crc)
    let mut names = HashSet::with_capacity(count);
    let mut p = cd_off;
    for _ in 0..count {
        if u32_at(bytes, p)? != CENTRAL_SIG {
            return Err(err("zip: bad central directory entry signature"));
        }
        let flags = u16_at(bytes, p + 8)?;
        let method = u16_at(bytes, p + 10)?;
        let crc = u32_at(bytes, p + 16)?;
        let mut csize = u64::from(u32_at(bytes, p + 20)?);
        let mut usize_ = u64::from(u32_at(bytes, p + 24)?);
        let name_len = u16_at(bytes, p + 28)? as usize;
        let extra_len = u16_at(bytes, p + 30)? as usize;
        let comment_len = u16_at(bytes, p + 32)? as usize;
        let mut local = u64::from(u32_at(bytes, p + 42)?);
        let name_bytes = bytes
            .get(p + 46..p + 46 + name_len)
            .ok_or_else(|| err("zip: entry name runs past the central directory"))?;
        let extra = bytes
            .get(p + 46 + name_len..p + 46 + name_len + extra_len)
            .ok_or_else(|| err("zip: entry extra field runs past the central directory"))?;
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| err("zip: entry name is not UTF-8"))?
            .to_string();
        let shown = super::quoted(&name);
        if !names.insert(name_bytes) {
            return Err(err(format!("zip: entry {shown} appears twice")));
        }
        if flags & 0x0001 != 0 {
            return Err(err(format!("zip: entry {shown} is encrypted")));
        }
        if method != 0 {
            return Err(err(format!(
                "zip: entry {shown} uses compression method {method}; torch.save writes stored entries only"
            )));
        }
        // ZIP64 extended information replaces the saturated 32-bit fields, in order.
        if usize_ == 0xFFFF_FFFF || csize == 0xFFFF_FFFF || local == 0xFFFF_FFFF {
            let mut e = 0;
            let mut found = false;
            while e + 4 <= extra.len() {
                let id = u16_at(extra, e)?;
                let len = u16_at(extra, e + 2)? as usize;
                let body = extra
                    .get(e + 4..e + 4 + len)
                    .ok_or_else(|| err("zip: bad extra field"))?;
                if id == 0x0001 {
                    let mut q = 0;
                    for field in [&mut usize_, &mut csize, &mut local] {
                        if *field == 0xFFFF_FFFF {
                            *field = u64_at(body, q)?;
                            q += 8;
                        }
                    }
                    found = true;
                    break;
                }
                e += 4 + len;
            }
            if !found {
                return Err(err(format!(
                    "zip: entry {shown} lacks its ZIP64 extra field"
                )));
            }
        }
        if csize != usize_ {
            return Err(err(format!(
                "zip: stored entry {shown} has differing sizes"
            )));
        }
        let local = to_usize(local)?;
        if local >= cd_off || u32_at(bytes, local)? != LOCAL_SIG {
            return Err(err(format!("zip: bad local header for {shown}")));
        }
        let lname = u16_at(bytes, local + 26)? as usize;
        let lextra = u16_at(bytes, local + 28)? as usize;
        if bytes.get(local + 30..local + 30 + lname) != Some(name_bytes) {
            return Err(err(format!("zip: local header name differs for {shown}")));
        }
        let start = local + 30 + lname + lextra;
        let end = start
            .checked_add(to_usize(csize)?)
            .filter(|&e| e <= cd_off)
            .ok_or_else(|| {
                err(format!(
                    "zip: entry {shown} runs past the central directory"
                ))
            })?;
        spans.push((local, end, crc));
        entries.push(ZipEntry {
            name,
            data: &bytes[start..end],
        });
        p += 46 + name_len + extra_len + comment_len;
    }
    if p != cd_end {
        return Err(err(
            "zip: central directory size does not match its entries",
        ));
    }
    // Pass 2: entries may not share bytes, so the CRCs below read each byte at most once.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_unstable_by_key(|&i| spans[i].0);
    for w in order.windows(2) {
        let (a, b) = (w[0], w[1]);
        if spans[a].1 > spans[b].0 {
            return Err(err(format!(
                "zip: entries {} and {} overlap",
                super::quoted(&entries[a].name),
                super::quoted(&entries[b].name)
            )));
        }
    }
    for (e, &(_, _, crc)) in entries.iter().zip(&spans) {
        if crc32fast::hash(e.data) != crc {
            return Err(err(format!(
                "zip: CRC-32 mismatch in entry {}",
                super::quoted(&e.name)
            )));
        }
    }
    Ok(entries)
}

/// A `torch.save` archive: the pickle plus the storage records under `<prefix>/data/`.
#[derive(Debug)]
pub struct TorchArchive<'a> {
    /// Top folder of the archive (`archive`, or the saved file's stem).
    pub prefix: String,
    /// `<prefix>/data.pkl`.
    pub pickle: &'a [u8],
    records: HashMap<String, &'a [u8]>,
    /// Tensor elements handed out by [`TorchArchive::charge_elements`] so far, and the budget:
    /// the archive's size in bytes (every element needs at least one stored byte, so only
    /// storages shared by many tensors can pass it).
    elements: std::cell::Cell<u64>,
    element_budget: u64,
}

impl<'a> TorchArchive<'a> {
    /// Parses a `torch.save` zip: finds the one `*/data.pkl`, checks `byteorder` (little only).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let entries = read_entries(bytes)?;
        let mut pickles = entries.iter().filter(|e| {
            e.name
                .strip_suffix("/data.pkl")
                .is_some_and(|p| !p.is_empty() && !p.contains('/'))
        });
        let pkl = pickles
            .next()
            .ok_or_else(|| err("zip: no <prefix>/data.pkl entry (not a torch.save archive)"))?;
        if let Some(other) = pickles.next() {
            return Err(err(format!(
                "zip: two pickles, {} and {} (a torch.save archive has one)",
                super::quoted(&pkl.name),
                super::quoted(&other.name)
            )));
        }
        let prefix = pkl.name[..pkl.name.len() - "/data.pkl".len()].to_string();
        let pickle = pkl.data;
        let data_dir = format!("{prefix}/data/");
        let mut records = HashMap::new();
        for e in &entries {
            if let Some(key) = e.name.strip_prefix(&data_dir) {
                if records.insert(key.to_string(), e.data).is_some() {
                    return Err(err(format!(
                        "zip: duplicate record {}",
                        super::quoted(&e.name)
                    )));
                }
            } else if e.name == format!("{prefix}/byteorder") && e.data != b"little" {
                return Err(err(format!(
                    "zip: byteorder {:?} is not supported (little endian only)",
                    String::from_utf8_lossy(e.data)
                )));
            }
        }
        Ok(TorchArchive {
            prefix,
            pickle,
            records,
            elements: std::cell::Cell::new(0),
            element_budget: bytes.len() as u64,
        })
    }

    /// Counts `n` more tensor elements against the archive's element budget (its size in
    /// bytes): a pickle that references one storage from many tensors cannot make the loader
    /// materialise more floats than the file holds bytes.
    pub fn charge_elements(&self, n: usize) -> Result<()> {
        let total = self.elements.get().saturating_add(n as u64);
        if total > self.element_budget {
            return Err(err(format!(
                "tensor: the tensors hold {total} elements, more than the archive's {} bytes \
                 (one storage referenced by many tensors?)",
                self.element_budget
            )));
        }
        self.elements.set(total);
        Ok(())
    }

    /// Bytes of storage record `<prefix>/data/<key>`.
    pub fn record(&self, key: &str) -> Result<&'a [u8]> {
        self.records.get(key).copied().ok_or_else(|| {
            err(format!(
                "zip: storage record {} is missing",
                super::quoted(&format!("{}/data/{key}", self.prefix))
            ))
        })
    }
}

/// Writes a stored-only zip archive, padding local headers so data starts on `align` bytes.
#[derive(Debug, Default)]
pub struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    count: usize,
}

impl ZipWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one stored entry whose data begins at a multiple of `align` (1 = no padding).
    pub fn add(&mut self, name: &str, data: &[u8], align: usize) -> Result<()> {
        let offset = self.out.len();
        if name.len() > 0xFFFF || data.len() as u64 >= 0xFFFF_FFFF || offset as u64 >= 0xFFFF_FFFF {
            return Err(err(
                "zip writer: archive larger than 4 GiB is not supported",
            ));
        }
        let crc = crc32fast::hash(data);
        let base = offset + 30 + name.len();
        let mut pad = 0;
        if align > 1 {
            // The padding is an extra field (id "FB", like torch's writer): 4 header bytes + fill.
            pad = (align - (base + 4) % align) % align + 4;
        }
        let mut hdr = Vec::with_capacity(30 + name.len() + pad);
        hdr.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        hdr.extend_from_slice(&20u16.to_le_bytes()); // version needed
        hdr.extend_from_slice(&0u16.to_le_bytes()); // flags
        hdr.extend_from_slice(&0u16.to_le_bytes()); // method: stored
        hdr.extend_from_slice(&0u16.to_le_bytes()); // time
        hdr.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
        hdr.extend_from_slice(&crc.to_le_bytes());
        hdr.extend_from_slice(&(data.len() as u32).to_le_bytes());
        hdr.extend_from_slice(&(data.len() as u32).to_le_bytes());
        hdr.extend_from_slice(&(name.len() as u16).to_le_bytes());
        hdr.extend_from_slice(&(pad as u16).to_le_bytes());
        hdr.extend_from_slice(name.as_bytes());
        if pad > 0 {
            hdr.extend_from_slice(b"FB");
            hdr.extend_from_slice(&((pad - 4) as u16).to_le_bytes());
            hdr.resize(hdr.len() + pad - 4, b'Z');
        }
        self.out.extend_from_slice(&hdr);
        self.out.extend_from_slice(data);

        let c = &mut self.central;
        c.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
        c.extend_from_slice(&20u16.to_le_bytes()); // version made by
        c.extend_from_slice(&20u16.to_le_bytes()); // version needed
        c.extend_from_slice(&0u16.to_le_bytes()); // flags
        c.extend_from_slice(&0u16.to_le_bytes()); // method
        c.extend_from_slice(&0u16.to_le_bytes()); // time
        c.extend_from_slice(&0x21u16.to_le_bytes()); // date
        c.extend_from_slice(&crc.to_le_bytes());
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes()); // extra
        c.extend_from_slice(&0u16.to_le_bytes()); // comment
        c.extend_from_slice(&0u16.to_le_bytes()); // disk
        c.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
        c.extend_from_slice(&0u32.to_le_bytes()); // external attrs
        c.extend_from_slice(&(offset as u32).to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        self.count += 1;
        Ok(())
    }

    /// Appends the central directory and end record; returns the archive bytes.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let cd_off = self.out.len();
        if self.count > 0xFFFE || (cd_off + self.central.len()) as u64 >= 0xFFFF_FFFF {
            return Err(err("zip writer: too many entries or archive too large"));
        }
        self.out.extend_from_slice(&self.central);
        let o = &mut self.out;
        o.extend_from_slice(&EOCD_SIG.to_le_bytes());
        o.extend_from_slice(&0u16.to_le_bytes());
        o.extend_from_slice(&0u16.to_le_bytes());
        o.extend_from_slice(&(self.count as u16).to_le_bytes());
        o.extend_from_slice(&(self.count as u16).to_le_bytes());
        o.extend_from_slice(&(self.central.len() as u32).to_le_bytes());
        o.extend_from_slice(&(cd_off as u32).to_le_bytes());
        o.extend_from_slice(&0u16.to_le_bytes());
        Ok(self.out)
    }
}

/// Alignment of storage records in archives torch writes (and in ours).
pub const STORAGE_ALIGNMENT: usize = 64;

/// Builds a `torch.load`-compatible archive: `<prefix>/data.pkl`, `.format_version`,
/// `.storage_alignment`, `byteorder`, `data/<key>` (64-byte aligned) and `version`, in the order
/// torch's own writer uses (data.pkl must come first: torch takes the prefix from it).
pub fn write_torch_archive(
    prefix: &str,
    pickle: &[u8],
    records: &[(String, Vec<u8>)],
) -> Result<Vec<u8>> {
    if prefix.is_empty() || prefix.contains('/') {
        return Err(err(format!("zip writer: bad archive prefix {prefix:?}")));
    }
    let mut w = ZipWriter::new();
    w.add(&format!("{prefix}/data.pkl"), pickle, STORAGE_ALIGNMENT)?;
    w.add(
        &format!("{prefix}/.format_version"),
        b"1",
        STORAGE_ALIGNMENT,
    )?;
    w.add(
        &format!("{prefix}/.storage_alignment"),
        b"64",
        STORAGE_ALIGNMENT,
    )?;
    w.add(&format!("{prefix}/byteorder"), b"little", STORAGE_ALIGNMENT)?;
    for (key, data) in records {
        w.add(&format!("{prefix}/data/{key}"), data, STORAGE_ALIGNMENT)?;
    }
    w.add(&format!("{prefix}/version"), b"3\n", STORAGE_ALIGNMENT)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_archive() -> Vec<u8> {
        let recs = vec![
            ("0".to_string(), (0..100u8).collect::<Vec<_>>()),
            ("1".to_string(), vec![7u8; 3]),
            ("2".to_string(), Vec::new()),
        ];
        write_torch_archive("mystem", b"\x80\x02N.", &recs).unwrap()
    }

    #[test]
    fn round_trip_and_alignment() {
        let z = sample_archive();
        let a = TorchArchive::parse(&z).unwrap();
        assert_eq!(a.prefix, "mystem");
        assert_eq!(a.pickle, b"\x80\x02N.");
        assert_eq!(a.record("0").unwrap(), &(0..100u8).collect::<Vec<_>>()[..]);
        assert_eq!(a.record("1").unwrap(), &[7, 7, 7]);
        assert!(a.record("2").unwrap().is_empty());
        assert!(a.record("3").is_err());
        // Every entry's data starts on a 64-byte boundary.
        let base = z.as_ptr() as usize;
        for e in read_entries(&z).unwrap() {
            assert_eq!((e.data.as_ptr() as usize - base) % 64, 0, "{}", e.name);
        }
        let names: Vec<_> = read_entries(&z)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names[0], "mystem/data.pkl");
        assert!(names.contains(&"mystem/byteorder".to_string()));
        assert!(names.contains(&"mystem/version".to_string()));
    }

    #[test]
    fn detects_corruption() {
        let z = sample_archive();
        // Flip a byte of record "0" payload: CRC must catch it.
        let a = TorchArchive::parse(&z).unwrap();
        let off = a.record("0").unwrap().as_ptr() as usize - z.as_ptr() as usize;
        let mut bad = z.clone();
        bad[off + 5] ^= 1;
        assert!(TorchArchive::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("CRC"));
        for cut in 0..z.len() {
            assert!(read_entries(&z[..cut]).is_err(), "prefix {cut}");
        }
    }

    /// The archive with its first central-directory record listed `times` times in all.
    fn repeat_first_record(z: &[u8], times: usize) -> Vec<u8> {
        let eocd = z.len() - 22;
        let cd_off = u32_at(z, eocd + 16).unwrap() as usize;
        let name_len = u16_at(z, cd_off + 28).unwrap() as usize;
        let rec = &z[cd_off..cd_off + 46 + name_len];
        let mut out = z[..eocd].to_vec();
        for _ in 1..times {
            out.extend_from_slice(rec);
        }
        let count = u16_at(z, eocd + 10).unwrap() as usize + times - 1;
        let cd_size = out.len() - cd_off;
        out.extend_from_slice(&z[eocd..eocd + 8]);
        out.extend_from_slice(&(count as u16).to_le_bytes());
        out.extend_from_slice(&(count as u16).to_le_bytes());
        out.extend_from_slice(&(cd_size as u32).to_le_bytes());
        out.extend_from_slice(&(cd_off as u32).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn each_entry_is_read_once() {
        let z = sample_archive();
        let e = read_entries(&repeat_first_record(&z, 3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"mystem/data.pkl\" appears twice"), "{e}");
        // An entry whose data holds another entry's local header: both listed, overlapping.
        let mut inner = ZipWriter::new();
        inner.add("a/data/x", b"payload", 1).unwrap();
        let inner = inner.finish().unwrap();
        let local_len = 30 + "a/data/x".len() + 7;
        let mut w = ZipWriter::new();
        w.add("a/data.pkl", &inner[..local_len], 1).unwrap();
        let outer = w.finish().unwrap();
        // Append a central record for the inner entry, pointing into the outer one's data.
        let eocd = outer.len() - 22;
        let cd_off = u32_at(&outer, eocd + 16).unwrap() as usize;
        let mut rec = inner[local_len..local_len + 46 + 8].to_vec();
        rec[42..46].copy_from_slice(&((30 + "a/data.pkl".len()) as u32).to_le_bytes());
        let mut z = outer[..eocd].to_vec();
        z.extend_from_slice(&rec);
        let cd_size = z.len() - cd_off;
        z.extend_from_slice(&outer[eocd..eocd + 8]);
        z.extend_from_slice(&2u16.to_le_bytes());
        z.extend_from_slice(&2u16.to_le_bytes());
        z.extend_from_slice(&(cd_size as u32).to_le_bytes());
        z.extend_from_slice(&(cd_off as u32).to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        let e = read_entries(&z).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
    }

    #[test]
    fn one_pickle_and_escaped_names() {
        let mut w = ZipWriter::new();
        w.add("a/data.pkl", b"N.", 64).unwrap();
        w.add("b/data.pkl", b"N.", 64).unwrap();
        let e = TorchArchive::parse(&w.finish().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("two pickles"), "{e}");
        let z = write_torch_archive("a", b"N.", &[]).unwrap();
        let a = TorchArchive::parse(&z).unwrap();
        let e = a.record("k\0\x1b[2J").unwrap_err().to_string();
        assert!(e.contains(r#""a/data/k\0\u{1b}[2J""#), "{e}");
        assert!(!e.contains('\0'), "{e}");
    }

    #[test]
    fn rejects_non_torch_and_big_endian() {
        let mut w = ZipWriter::new();
        w.add("foo.txt", b"x", 1).unwrap();
        assert!(TorchArchive::parse(&w.finish().unwrap()).is_err());
        let mut w = ZipWriter::new();
        w.add("a/data.pkl", b"N.", 64).unwrap();
        w.add("a/byteorder", b"big", 64).unwrap();
        assert!(TorchArchive::parse(&w.finish().unwrap())
            .unwrap_err()
            .to_string()
            .contains("byteorder"));
    }
}
