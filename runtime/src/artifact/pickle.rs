//! A minimal pickle virtual machine (and writer) for the protocol-2 subset `torch.save` emits.
//!
//! Why: artifacts are `torch.save` pickles and the runtime must load them without Python.
//! Nothing is executed: `GLOBAL` yields a [`Value::Global`] name and `REDUCE` a
//! [`Value::Reduce`] node that the `torch` layer interprets (only `collections.OrderedDict()` is
//! folded into a plain dict here). Every malformed stream is an error, never a panic: unknown
//! opcodes, truncation, stack underflow, bad memo indices, and oversized or too deeply nested
//! values.
//!
//! Memory and time are bounded for any input: every value the VM materialises is charged to a
//! byte budget ([`crate::limits::PICKLE_BYTES`]: its node size plus its string or bytes
//! length), memo fetches included, since a fetch copies its value (so a small stream that
//! fetches one large string many times fails cheaply, before the copies exist); MARKs are
//! charged too, and the stack holds at most [`crate::limits::PICKLE_STACK`] entries. Because the
//! tree handed back is no larger than the budget, everything that walks it later is bounded too.

use std::collections::HashMap;

use super::err;
use crate::Result;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Dict (or `OrderedDict`) entries in insertion order.
    Dict(Vec<(Value, Value)>),
    /// `GLOBAL module name` (a class or function reference; never resolved or called).
    Global {
        module: String,
        name: String,
    },
    /// `BINPERSID`: a persistent id (torch: a storage reference tuple).
    PersId(Box<Value>),
    /// `REDUCE`: `callable(*args)`, left for the caller to interpret.
    Reduce {
        callable: Box<Value>,
        args: Box<Value>,
    },
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
    /// Tuple or list items.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
    /// Looks a string key up in a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .rfind(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
    /// The kind of value, for messages (`str`, `dict`, `reduce`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global { .. } => "global",
            Value::PersId(_) => "persistent id",
            Value::Reduce { .. } => "reduce",
        }
    }
    /// True for `GLOBAL module name`.
    pub fn is_global(&self, module: &str, name: &str) -> bool {
        matches!(self, Value::Global { module: m, name: n } if m == module && n == name)
    }
}

/// Deepest nesting accepted (torch state dicts nest about 5 levels).
pub const MAX_DEPTH: u32 = 64;
/// Bytes charged to the budget for each value node and each MARK, besides a string's or bytes
/// object's length.
pub const NODE_BYTES: u64 = std::mem::size_of::<Value>() as u64;

/// A stack slot with bookkeeping so depth and size checks stay O(1).
#[derive(Debug, Clone)]
struct Item {
    v: Value,
    depth: u32,
    /// Bytes charged for this value and everything inside it.
    bytes: u64,
}

enum Slot {
    Mark,
    Item(Item),
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Item>,
    /// Bytes charged so far, and the budget.
    used: u64,
    budget: u64,
    max_stack: usize,
}

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| err(format!("pickle: truncated stream at byte {}", self.pos)))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| err("pickle: unterminated GLOBAL line"))?;
        let s =
            std::str::from_utf8(&rest[..n]).map_err(|_| err("pickle: GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    /// Charges `n` bytes to the budget (before the memory they stand for is allocated).
    fn charge(&mut self, n: u64) -> Result<()> {
        self.used = self.used.saturating_add(n);
        if self.used > self.budget {
            return Err(err(crate::limits::PICKLE_BYTES.exceeded_at(
                format!(
                    "pickle: the values it builds (memo copies included) at byte {}",
                    self.pos
                ),
                self.budget,
            )));
        }
        Ok(())
    }
    fn push(&mut self, slot: Slot) -> Result<()> {
        if self.stack.len() >= self.max_stack {
            return Err(err(crate::limits::PICKLE_STACK.exceeded_at(
                format!("pickle: the stack (MARKs included) at byte {}", self.pos),
                self.max_stack as u64,
            )));
        }
        self.stack.push(slot);
        Ok(())
    }
    fn push_mark(&mut self) -> Result<()> {
        self.charge(NODE_BYTES)?;
        self.push(Slot::Mark)
    }
    fn push_leaf(&mut self, v: Value) -> Result<()> {
        let payload = match &v {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Global { module, name } => module.len() + name.len(),
            _ => 0,
        };
        let bytes = NODE_BYTES + payload as u64;
        self.charge(bytes)?;
        self.push(Slot::Item(Item { v, depth: 1, bytes }))
    }
    fn push_item(&mut self, it: Item) -> Result<()> {
        if it.depth > MAX_DEPTH {
            return Err(err("pickle: values nested too deeply"));
        }
        self.push(Slot::Item(it))
    }
    fn pop(&mut self) -> Result<Item> {
        match self.stack.pop() {
            Some(Slot::Item(it)) => Ok(it),
            Some(Slot::Mark) => Err(err("pickle: unexpected MARK on the stack")),
            None => Err(err("pickle: stack underflow")),
        }
    }
    fn top_mut(&mut self) -> Result<&mut Item> {
        match self.stack.last_mut() {
            Some(Slot::Item(it)) => Ok(it),
            Some(Slot::Mark) => Err(err("pickle: unexpected MARK on the stack")),
            None => Err(err("pickle: stack underflow")),
        }
    }
    /// Pops everything above the topmost MARK (and the MARK).
    fn pop_mark(&mut self) -> Result<Vec<Item>> {
        let m = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| err("pickle: no MARK on the stack"))?;
        let items = self
            .stack
            .drain(m + 1..)
            .map(|s| match s {
                Slot::Item(it) => it,
                Slot::Mark => unreachable!("rposition found the last mark"),
            })
            .collect();
        self.stack.pop();
        Ok(items)
    }
    fn container(&mut self, items: Vec<Item>, wrap: fn(Vec<Value>) -> Value) -> Result<Item> {
        self.charge(NODE_BYTES)?;
        let depth = 1 + items.iter().map(|i| i.depth).max().unwrap_or(0);
        let bytes = NODE_BYTES + items.iter().map(|i| i.bytes).sum::<u64>();
        Ok(Item {
            v: wrap(items.into_iter().map(|i| i.v).collect()),
            depth,
            bytes,
        })
    }
    fn memo_put(&mut self, idx: u32) -> Result<()> {
        let n = self.top_mut()?.bytes;
        self.charge(n)?; // before cloning, so a memo bomb fails cheaply
        let it = self.top_mut()?.clone();
        self.memo.insert(idx, it);
        Ok(())
    }
    fn memo_get(&mut self, idx: u32) -> Result<()> {
        let n = self
            .memo
            .get(&idx)
            .map(|it| it.bytes)
            .ok_or_else(|| err(format!("pickle: memo index {idx} not set")))?;
        self.charge(n)?; // before cloning, so a memo bomb fails cheaply
        let it = self.memo[&idx].clone();
        self.push_item(it)
    }
    fn append(&mut self, extra: Vec<Item>) -> Result<()> {
        let n = extra.iter().map(|i| i.bytes).sum::<u64>();
        let d = extra.iter().map(|i| i.depth).max().unwrap_or(0);
        let top = self.top_mut()?;
        match &mut top.v {
            Value::List(l) => l.extend(extra.into_iter().map(|i| i.v)),
            _ => return Err(err("pickle: APPEND(S) on a non-list")),
        }
        top.bytes += n;
        top.depth = top.depth.max(d + 1);
        if top.depth > MAX_DEPTH {
            return Err(err("pickle: values nested too deeply"));
        }
        Ok(())
    }
    fn setitems(&mut self, kv: Vec<Item>) -> Result<()> {
        if !kv.len().is_multiple_of(2) {
            return Err(err("pickle: SETITEMS with an odd number of items"));
        }
        let n = kv.iter().map(|i| i.bytes).sum::<u64>();
        let d = kv.iter().map(|i| i.depth).max().unwrap_or(0);
        let top = self.top_mut()?;
        let Value::Dict(dict) = &mut top.v else {
            return Err(err("pickle: SETITEM(S) on a non-dict"));
        };
        let mut it = kv.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            // Repeated keys are kept (O(1) inserts); `Value::get` returns the last one, as
            // Python would, and the tensor layer rejects duplicate tensor names.
            dict.push((k.v, v.v));
        }
        top.bytes += n;
        top.depth = top.depth.max(d + 1);
        if top.depth > MAX_DEPTH {
            return Err(err("pickle: values nested too deeply"));
        }
        Ok(())
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(err(format!("pickle: unsupported protocol {p}")));
                    }
                }
                0x95 => {
                    // FRAME: an 8-byte length; framing does not change the opcode stream.
                    self.take(8)?;
                }
                b'.' => {
                    // STOP
                    let it = self.pop()?;
                    return Ok(it.v);
                }
                b'(' => self.push_mark()?,
                b'}' => self.push_leaf(Value::Dict(Vec::new()))?,
                b']' => self.push_leaf(Value::List(Vec::new()))?,
                b')' => self.push_leaf(Value::Tuple(Vec::new()))?,
                b'N' => self.push_leaf(Value::None)?,
                0x88 => self.push_leaf(Value::Bool(true))?,
                0x89 => self.push_leaf(Value::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push_leaf(Value::Int(i64::from(v)))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_leaf(Value::Int(i64::from(v)))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push_leaf(Value::Int(i64::from(v)))?
                }
                0x8a => {
                    // LONG1: little-endian two's complement, up to 8 bytes accepted.
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return Err(err("pickle: LONG1 integer wider than 64 bits"));
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= i64::from(x) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push_leaf(Value::Int(v))?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.push_leaf(Value::Float(v))?
                }
                b'X' | 0x8c => {
                    // BINUNICODE (u32 length) / SHORT_BINUNICODE (u8 length)
                    let n = if op == b'X' {
                        self.u32()? as usize
                    } else {
                        self.u8()? as usize
                    };
                    let b = self.take(n)?;
                    let s =
                        std::str::from_utf8(b).map_err(|_| err("pickle: string is not UTF-8"))?;
                    self.push_leaf(Value::Str(s.to_string()))?
                }
                b'T' | b'U' => {
                    // BINSTRING / SHORT_BINSTRING (py2 str): latin-1 text
                    let n = if op == b'T' {
                        self.u32()? as usize
                    } else {
                        self.u8()? as usize
                    };
                    let b = self.take(n)?;
                    self.push_leaf(Value::Str(b.iter().map(|&c| c as char).collect()))?
                }
                b'B' | b'C' => {
                    // BINBYTES / SHORT_BINBYTES
                    let n = if op == b'B' {
                        self.u32()? as usize
                    } else {
                        self.u8()? as usize
                    };
                    let b = self.take(n)?.to_vec();
                    self.push_leaf(Value::Bytes(b))?
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push_leaf(Value::Global { module, name })?
                }
                b'Q' => {
                    // BINPERSID
                    let pid = self.pop()?;
                    self.charge(NODE_BYTES)?;
                    self.push_item(Item {
                        depth: pid.depth + 1,
                        bytes: pid.bytes + NODE_BYTES,
                        v: Value::PersId(Box::new(pid.v)),
                    })?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let it = self.container(items, Value::Tuple)?;
                    self.push_item(it)?
                }
                0x85..=0x87 => {
                    // TUPLE1 / TUPLE2 / TUPLE3
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let it = self.container(items, Value::Tuple)?;
                    self.push_item(it)?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let it = self.container(items, Value::List)?;
                    self.push_item(it)?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_leaf(Value::Dict(Vec::new()))?;
                    self.setitems(items)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    if !matches!(args.v, Value::Tuple(_)) {
                        return Err(err("pickle: REDUCE arguments are not a tuple"));
                    }
                    if callable.v.is_global("collections", "OrderedDict") {
                        // OrderedDict() with no args: an empty dict to be filled by SETITEMS.
                        if args.v != Value::Tuple(Vec::new()) {
                            return Err(err("pickle: OrderedDict called with arguments"));
                        }
                        self.push_leaf(Value::Dict(Vec::new()))?;
                    } else {
                        self.charge(NODE_BYTES)?;
                        self.push_item(Item {
                            depth: 1 + callable.depth.max(args.depth),
                            bytes: NODE_BYTES + callable.bytes + args.bytes,
                            v: Value::Reduce {
                                callable: Box::new(callable.v),
                                args: Box::new(args.v),
                            },
                        })?
                    }
                }
                b'b' => {
                    // BUILD: state_dict OrderedDicts carry a `_metadata` attribute; drop it.
                    let _state = self.pop()?;
                    if !matches!(self.top_mut()?.v, Value::Dict(_)) {
                        return Err(err("pickle: BUILD is only supported on dicts"));
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.setitems(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.setitems(items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(u32::from(i))?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    // MEMOIZE
                    let i =
                        u32::try_from(self.memo.len()).map_err(|_| err("pickle: memo overflow"))?;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(u32::from(i))?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b'0' => {
                    // POP
                    self.stack
                        .pop()
                        .ok_or_else(|| err("pickle: stack underflow"))?;
                }
                _ => {
                    return Err(err(format!(
                        "pickle: unsupported opcode 0x{op:02x} at byte {at}"
                    )))
                }
            }
        }
    }
}

/// Runs a pickle stream and returns the value `STOP` yields. Memoized dicts/lists are snapshots
/// taken at memoization time (torch never mutates a container after sharing it). Bounded by
/// [`crate::limits::PICKLE_BYTES`] and [`crate::limits::PICKLE_STACK`].
pub fn load(data: &[u8]) -> Result<Value> {
    load_with_limits(
        data,
        crate::limits::PICKLE_BYTES.get(),
        crate::limits::PICKLE_STACK.get_usize(),
    )
}

/// [`load`] with an explicit byte budget and stack size.
pub fn load_with_limits(data: &[u8], budget: u64, max_stack: usize) -> Result<Value> {
    Vm {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        used: 0,
        budget,
        max_stack,
    }
    .run()
}

/// Items per MARK-delimited APPENDS / SETITEMS run in [`dump`] (as Python's pickler batches):
/// the stack a reader needs stays small however long a list or dict is.
const BATCH: usize = 1000;

/// Serializes a [`Value`] as a protocol-2 pickle (the subset [`load`] and torch's
/// `weights_only` unpickler accept). `Reduce` and `PersId` nodes are written as such.
pub fn dump(v: &Value) -> Result<Vec<u8>> {
    let mut out = vec![0x80, 2];
    write_value(v, &mut out, 0)?;
    out.push(b'.');
    Ok(out)
}

fn write_str(s: &str, out: &mut Vec<u8>) -> Result<()> {
    let n = u32::try_from(s.len()).map_err(|_| err("pickle writer: string too long"))?;
    out.push(b'X');
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn write_value(v: &Value, out: &mut Vec<u8>, depth: u32) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(err("pickle writer: value nested too deeply"));
    }
    match v {
        Value::None => out.push(b'N'),
        Value::Bool(true) => out.push(0x88),
        Value::Bool(false) => out.push(0x89),
        Value::Int(i) => {
            let i = *i;
            if (0..=0xFF).contains(&i) {
                out.extend_from_slice(&[b'K', i as u8]);
            } else if (0..=0xFFFF).contains(&i) {
                out.push(b'M');
                out.extend_from_slice(&(i as u16).to_le_bytes());
            } else if let Ok(i32v) = i32::try_from(i) {
                out.push(b'J');
                out.extend_from_slice(&i32v.to_le_bytes());
            } else {
                // LONG1 with the shortest two's-complement encoding.
                let b = i.to_le_bytes();
                let mut n = 8;
                while n > 1 {
                    let top = b[n - 1];
                    let next_sign = b[n - 2] & 0x80;
                    if (top == 0 && next_sign == 0) || (top == 0xFF && next_sign != 0) {
                        n -= 1;
                    } else {
                        break;
                    }
                }
                out.extend_from_slice(&[0x8a, n as u8]);
                out.extend_from_slice(&b[..n]);
            }
        }
        Value::Float(f) => {
            out.push(b'G');
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => write_str(s, out)?,
        Value::Bytes(b) => {
            let n = u32::try_from(b.len()).map_err(|_| err("pickle writer: bytes too long"))?;
            out.push(b'B');
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(b);
        }
        Value::Tuple(items) => match items.len() {
            0 => out.push(b')'),
            1..=3 => {
                for it in items {
                    write_value(it, out, depth + 1)?;
                }
                out.push(0x84 + items.len() as u8);
            }
            _ => {
                out.push(b'(');
                for it in items {
                    write_value(it, out, depth + 1)?;
                }
                out.push(b't');
            }
        },
        Value::List(items) => {
            out.push(b']');
            for batch in items.chunks(BATCH) {
                out.push(b'(');
                for it in batch {
                    write_value(it, out, depth + 1)?;
                }
                out.push(b'e');
            }
        }
        Value::Dict(entries) => {
            out.push(b'}');
            for batch in entries.chunks(BATCH) {
                out.push(b'(');
                for (k, val) in batch {
                    write_value(k, out, depth + 1)?;
                    write_value(val, out, depth + 1)?;
                }
                out.push(b'u');
            }
        }
        Value::Global { module, name } => {
            if [module, name].iter().any(|s| s.contains('\n')) {
                return Err(err("pickle writer: newline in a GLOBAL name"));
            }
            out.push(b'c');
            out.extend_from_slice(module.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        Value::PersId(pid) => {
            write_value(pid, out, depth + 1)?;
            out.push(b'Q');
        }
        Value::Reduce { callable, args } => {
            write_value(callable, out, depth + 1)?;
            write_value(args, out, depth + 1)?;
            out.push(b'R');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn decodes_hand_written_stream() {
        // {'a': [1, -2, 300, 70000, 2**40, -(2**40)], 'b': (True, None, 1.5), 'c': 'a'} with memo.
        let mut p = vec![
            0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b'q', 1,
        ];
        p.extend_from_slice(&[b']', b'(', b'K', 1, b'J']);
        p.extend_from_slice(&(-2i32).to_le_bytes());
        p.extend_from_slice(&[b'M', 0x2c, 0x01, b'J']);
        p.extend_from_slice(&70000i32.to_le_bytes());
        p.extend_from_slice(&[0x8a, 6, 0, 0, 0, 0, 0, 1]); // 2**40
        p.extend_from_slice(&[0x8a, 6, 0, 0, 0, 0, 0, 0xff]); // -(2**40)
        p.extend_from_slice(&[b'e', 0x8c, 1, b'b', 0x88, b'N', b'G']);
        p.extend_from_slice(&1.5f64.to_be_bytes());
        p.extend_from_slice(&[0x87, b'U', 1, b'c', b'h', 1, b'u', b'.']);
        let v = load(&p).unwrap();
        assert_eq!(
            v.get("a").unwrap(),
            &Value::List(vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Int(300),
                Value::Int(70000),
                Value::Int(1 << 40),
                Value::Int(-(1 << 40)),
            ])
        );
        assert_eq!(
            v.get("b").unwrap(),
            &Value::Tuple(vec![Value::Bool(true), Value::None, Value::Float(1.5)])
        );
        assert_eq!(v.get("c").unwrap(), &s("a"));
    }

    #[test]
    fn global_reduce_persid_ordereddict() {
        let p = b"\x80\x02ctorch\nFloatStorage\nq\x00X\x01\x00\x00\x000h\x00\x86Qccollections\nOrderedDict\n)R\x86.";
        let v = load(p).unwrap();
        let items = v.as_seq().unwrap();
        let Value::PersId(pid) = &items[0] else {
            panic!("{v:?}")
        };
        let pid = pid.as_seq().unwrap();
        assert_eq!(pid[0], s("0"));
        assert!(pid[1].is_global("torch", "FloatStorage"));
        assert_eq!(items[1], Value::Dict(vec![]));
    }

    #[test]
    fn round_trips_through_writer() {
        let v = Value::Dict(vec![
            (s("x"), Value::Int(-5)),
            (s("big"), Value::Int(i64::MIN)),
            (
                s("t"),
                Value::Tuple(vec![
                    Value::Int(1),
                    Value::Int(2),
                    Value::Int(3),
                    Value::Int(4),
                ]),
            ),
            (
                s("l"),
                Value::List(vec![Value::Float(-0.25), Value::Bool(false)]),
            ),
            (
                s("g"),
                Value::Global {
                    module: "torch".into(),
                    name: "HalfStorage".into(),
                },
            ),
            (
                s("r"),
                Value::Reduce {
                    callable: Box::new(Value::Global {
                        module: "m".into(),
                        name: "f".into(),
                    }),
                    args: Box::new(Value::Tuple(vec![Value::PersId(Box::new(s("k")))])),
                },
            ),
            (s("e"), Value::Dict(vec![])),
            (s("b"), Value::Bytes(vec![1, 2])),
        ]);
        assert_eq!(load(&dump(&v).unwrap()).unwrap(), v);
        for i in [
            0,
            255,
            256,
            65535,
            65536,
            -1,
            i32::MIN as i64,
            i32::MAX as i64 + 1,
            -(1 << 50),
        ] {
            assert_eq!(
                load(&dump(&Value::Int(i)).unwrap()).unwrap(),
                Value::Int(i),
                "{i}"
            );
        }
    }

    #[test]
    fn errors_never_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x80\x02",                     // no STOP
            b"\x80\x02.",                    // STOP on empty stack
            b"\x80\x02\xff.",                // unknown opcode
            b"\x80\x02h\x05.",               // bad memo index
            b"\x80\x02X\xff\xff\x00\x00ab.", // truncated string
            b"\x80\x02K\x01s.",              // SETITEM underflow
            b"\x80\x02(K\x01K\x02u.",        // SETITEMS on a mark without dict
            b"\x80\x02K\x01K\x02R.",         // REDUCE args not a tuple
            b"\x80\x02t.",                   // TUPLE without MARK
            b"\x80\x02]K\x01s.",             // SETITEM on a list
            b"\x80\x02cfoo",                 // unterminated GLOBAL
            b"\x80\x09N.",                   // protocol too new
            b"\x80\x02(.",                   // STOP on a MARK
        ];
        for c in cases {
            assert!(load(c).is_err(), "{c:?} accepted");
        }
        // Deep nesting is bounded.
        let mut deep = vec![0x80, 2, b'N'];
        deep.extend(std::iter::repeat_n(0x85u8, 1000));
        deep.push(b'.');
        assert!(load(&deep).unwrap_err().to_string().contains("deep"));
        // Exponential memo copies are bounded: x = [x, x] repeated.
        let mut bomb = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..60 {
            bomb.extend_from_slice(&[b'0', b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        bomb.push(b'.');
        assert!(load(&bomb).is_err());
    }

    /// `X <n bytes> q0` then `(`, `h0` x fetches, `l.`: one string copied on every fetch.
    fn memo_string_bomb(len: usize, fetches: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'X'];
        p.extend_from_slice(&(len as u32).to_le_bytes());
        p.resize(p.len() + len, b'a');
        p.extend_from_slice(&[b'q', 0, b'(']);
        for _ in 0..fetches {
            p.extend_from_slice(&[b'h', 0]);
        }
        p.extend_from_slice(b"l.");
        p
    }

    #[test]
    fn byte_budget_counts_memo_copies() {
        let fine = memo_string_bomb(1000, 100);
        assert_eq!(load(&fine).unwrap().as_seq().unwrap().len(), 100);
        // 1 MB fetched 1000 times would be 1 GB of copies: refused before they are made.
        let bomb = memo_string_bomb(1 << 20, 1000);
        let e = load_with_limits(&bomb, 64 << 20, 1 << 16)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exceeds the limit of 67108864 bytes")
                && e.contains("PGOLF_MAX_PICKLE_BYTES"),
            "{e}"
        );
    }

    #[test]
    fn marks_count_against_the_stack() {
        let mut marks = vec![0x80, 2];
        marks.resize(2 + 1_000_000, b'(');
        marks.push(b'.');
        let e = load_with_limits(&marks, u64::MAX, 1 << 16)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGOLF_MAX_PICKLE_STACK"), "{e}");
        // Marks also cost budget bytes.
        let e = load_with_limits(&marks, 1000, usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGOLF_MAX_PICKLE_BYTES"), "{e}");
    }

    #[test]
    fn writer_batches_long_dicts_and_lists() {
        let d = Value::Dict((0..2500).map(|i| (Value::Int(i), Value::None)).collect());
        let l = Value::List((0..2500).map(Value::Int).collect());
        for v in [d, l] {
            let p = dump(&v).unwrap();
            // Each batch needs its own MARK plus up to 2 x 1000 items on the stack.
            assert_eq!(load_with_limits(&p, u64::MAX, 2010).unwrap(), v);
            assert!(load_with_limits(&p, u64::MAX, 1000).is_err());
        }
    }
}
