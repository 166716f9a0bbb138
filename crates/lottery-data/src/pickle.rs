//! A small reader of Python pickles: enough to read the numpy arrays, scipy sparse matrices and
//! `defaultdict`s of the Planetoid files (Python 2 pickles, protocol 2) and their Python 3
//! re-pickled forms (protocols 2–5). Nothing is executed: calls and objects stay as data
//! ([`Py::Object`]) for the caller to interpret. (The crates of crates.io either reject objects
//! outright or are PyTorch-checkpoint scrapers; this one keeps the structure the loaders need.)

/// A Python value as the pickle describes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer (the files' integers fit 64 bits).
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string (Python 2 `str`, Python 3 `bytes`).
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Py>),
    /// A list.
    List(Vec<Py>),
    /// A dict, in insertion order.
    Dict(Vec<(Py, Py)>),
    /// A global name (a class or function): module and name.
    Global(String, String),
    /// `callable(*args)` (REDUCE or NEWOBJ), then `__setstate__(state)` (BUILD) and items set or
    /// appended on it.
    Object {
        /// The callable (usually a [`Py::Global`]).
        callable: Box<Py>,
        /// Its arguments.
        args: Vec<Py>,
        /// The state BUILD gave it.
        state: Option<Box<Py>>,
        /// Key-value pairs SETITEM(S) put in it (a `defaultdict`).
        items: Vec<(Py, Py)>,
    },
}

impl Py {
    /// The global's `(module, name)` when this is a global or an object made by one.
    pub fn class(&self) -> Option<(&str, &str)> {
        match self {
            Py::Global(m, n) => Some((m, n)),
            Py::Object { callable, args, .. } => match (callable.as_ref(), args.first()) {
                // copyreg._reconstructor(cls, base, state) and __newobj__(cls, ...) name the class.
                (Py::Global(m, n), Some(Py::Global(cm, cn)))
                    if (m == "copy_reg" || m == "copyreg")
                        && (n == "_reconstructor" || n == "__newobj__") =>
                {
                    Some((cm, cn))
                }
                (Py::Global(m, n), _) => Some((m, n)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value under a string key of a dict (or of an object's dict state).
    pub fn get(&self, key: &str) -> Option<&Py> {
        let pairs = match self {
            Py::Dict(p) => p,
            Py::Object { state: Some(s), .. } => return s.get(key),
            Py::Object { items, .. } => items,
            _ => return None,
        };
        pairs.iter().find_map(|(k, v)| match k {
            Py::Str(s) if s == key => Some(v),
            Py::Bytes(b) if b == key.as_bytes() => Some(v),
            _ => None,
        })
    }

    /// An integer value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Py::Int(i) => Some(*i),
            Py::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Text or bytes as text (Latin-1 for bytes, as `encoding='latin1'` reads Python 2 strings).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Py::Str(s) => Some(s.clone()),
            Py::Bytes(b) => Some(b.iter().map(|&c| c as char).collect()),
            _ => None,
        }
    }

    /// Raw bytes: bytes, or a text string read as Latin-1 (Python 3's `encoding='latin1'` view
    /// of Python 2 data, and `_codecs.encode(text, 'latin1')`).
    pub fn as_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Py::Bytes(b) => Some(b.clone()),
            Py::Str(s) => s.chars().map(|c| u8::try_from(c as u32).ok()).collect(),
            Py::Object { callable, args, .. } => match (callable.as_ref(), args.as_slice()) {
                (Py::Global(m, n), [text, ..]) if m == "_codecs" && n == "encode" => {
                    text.as_bytes()
                }
                (Py::Global(m, n), [arg]) if m.ends_with("builtins") && n == "bytearray" => {
                    arg.as_bytes()
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Items of a tuple or list.
    pub fn items(&self) -> Option<&[Py]> {
        match self {
            Py::Tuple(v) | Py::List(v) => Some(v),
            _ => None,
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pickle byte {offset}: {why}")]
pub struct PickleError {
    /// Offset of the opcode at fault.
    pub offset: usize,
    /// What went wrong.
    pub why: String,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    op_at: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, why: impl Into<String>) -> PickleError {
        PickleError {
            offset: self.op_at,
            why: why.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        if n > self.data.len() - self.pos {
            return Err(self.err(format!("truncated: {n} bytes wanted")));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn le(&mut self, n: usize) -> Result<u64, PickleError> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64))
    }
    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| self.err("unterminated line"))?;
        self.pos += end + 1;
        Ok(rest[..end].iter().map(|&c| c as char).collect())
    }
}

/// Reads one pickled value.
pub fn load(data: &[u8]) -> Result<Py, PickleError> {
    let mut r = Reader {
        data,
        pos: 0,
        op_at: 0,
    };
    let mut stack: Vec<Py> = vec![];
    let mut marks: Vec<usize> = vec![];
    let mut memo: std::collections::HashMap<u64, Py> = Default::default();
    macro_rules! pop {
        () => {
            stack.pop().ok_or_else(|| r.err("stack underflow"))?
        };
    }
    loop {
        r.op_at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.le(8)?; // FRAME
            }
            b'.' => return stack.pop().ok_or_else(|| r.err("empty stack at STOP")),
            b'(' => marks.push(stack.len()),
            b'N' => stack.push(Py::None),
            0x88 => stack.push(Py::Bool(true)),
            0x89 => stack.push(Py::Bool(false)),
            b'K' => {
                let v = r.u8()? as i64;
                stack.push(Py::Int(v))
            }
            b'M' => {
                let v = r.le(2)? as i64;
                stack.push(Py::Int(v))
            }
            b'J' => {
                let v = r.le(4)? as u32 as i32 as i64;
                stack.push(Py::Int(v))
            }
            0x8a | 0x8b => {
                // LONG1 / LONG4: little-endian two's complement.
                let n = if op == 0x8a {
                    r.u8()? as usize
                } else {
                    r.le(4)? as usize
                };
                let b = r.take(n)?;
                if n > 8 {
                    return Err(r.err("integer wider than 64 bits"));
                }
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Py::Int(v));
            }
            b'I' | b'L' => {
                let line = r.line()?;
                let t = line.trim_end_matches('L');
                stack.push(match t {
                    "00" => Py::Bool(false),
                    "01" => Py::Bool(true),
                    _ => Py::Int(t.parse().map_err(|_| r.err(format!("bad int {line:?}")))?),
                });
            }
            b'G' => {
                let b = r.take(8)?;
                stack.push(Py::Float(f64::from_be_bytes(b.try_into().expect("8"))));
            }
            b'F' => {
                let line = r.line()?;
                stack.push(Py::Float(
                    line.parse()
                        .map_err(|_| r.err(format!("bad float {line:?}")))?,
                ));
            }
            b'U' | b'C' => {
                let n = r.u8()? as usize;
                stack.push(Py::Bytes(r.take(n)?.to_vec()));
            }
            b'T' | b'B' => {
                let n = r.le(4)? as usize;
                stack.push(Py::Bytes(r.take(n)?.to_vec()));
            }
            0x8e | 0x96 => {
                let n = r.le(8)? as usize;
                stack.push(Py::Bytes(r.take(n)?.to_vec()));
            }
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => r.u8()? as usize,
                    b'X' => r.le(4)? as usize,
                    _ => r.le(8)? as usize,
                };
                let b = r.take(n)?;
                stack.push(Py::Str(
                    String::from_utf8(b.to_vec()).map_err(|_| r.err("bad UTF-8"))?,
                ));
            }
            b'S' => {
                let line = r.line()?;
                let t = line.trim().as_bytes();
                // A quoted repr: 'text' or "text".
                if t.len() < 2 || t[0] != t[t.len() - 1] || !matches!(t[0], b'\'' | b'"') {
                    return Err(r.err(format!("bad STRING {line:?}")));
                }
                stack.push(Py::Bytes(t[1..t.len() - 1].to_vec()));
            }
            b')' => stack.push(Py::Tuple(vec![])),
            b']' => stack.push(Py::List(vec![])),
            b'}' => stack.push(Py::Dict(vec![])),
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(r.err("stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Py::Tuple(items));
            }
            b't' | b'l' | b'd' => {
                let m = marks.pop().ok_or_else(|| r.err("no mark"))?;
                let items = stack.split_off(m);
                stack.push(match op {
                    b't' => Py::Tuple(items),
                    b'l' => Py::List(items),
                    _ => Py::Dict(pairs(items)),
                });
            }
            b'a' => {
                let v = pop!();
                append(stack.last_mut(), vec![v]).map_err(|w| r.err(w))?;
            }
            b'e' => {
                let m = marks.pop().ok_or_else(|| r.err("no mark"))?;
                let items = stack.split_off(m);
                append(stack.last_mut(), items).map_err(|w| r.err(w))?;
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                set_items(stack.last_mut(), vec![(k, v)]).map_err(|w| r.err(w))?;
            }
            b'u' => {
                let m = marks.pop().ok_or_else(|| r.err("no mark"))?;
                let items = stack.split_off(m);
                set_items(stack.last_mut(), pairs(items)).map_err(|w| r.err(w))?;
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Py::Global(module, name));
            }
            0x93 => {
                let name = pop!().as_text().ok_or_else(|| r.err("STACK_GLOBAL name"))?;
                let module = pop!()
                    .as_text()
                    .ok_or_else(|| r.err("STACK_GLOBAL module"))?;
                stack.push(Py::Global(module, name));
            }
            b'R' | 0x81 => {
                let args = pop!();
                let callable = pop!();
                let args = match args {
                    Py::Tuple(a) => a,
                    other => vec![other],
                };
                stack.push(Py::Object {
                    callable: Box::new(callable),
                    args,
                    state: None,
                    items: vec![],
                });
            }
            b'b' => {
                let s = pop!();
                match stack.last_mut() {
                    Some(Py::Object { state, .. }) => *state = Some(Box::new(s)),
                    Some(Py::Dict(d)) => {
                        if let Py::Dict(p) = s {
                            d.extend(p)
                        }
                    }
                    _ => return Err(r.err("BUILD on a value that is not an object")),
                }
            }
            b'p' => {
                let i = r.line()?.parse().map_err(|_| r.err("bad PUT index"))?;
                memo.insert(
                    i,
                    stack.last().cloned().ok_or_else(|| r.err("PUT on empty"))?,
                );
            }
            b'q' | b'r' => {
                let i = if op == b'q' { r.u8()? as u64 } else { r.le(4)? };
                memo.insert(
                    i,
                    stack.last().cloned().ok_or_else(|| r.err("PUT on empty"))?,
                );
            }
            0x94 => {
                let i = memo.len() as u64;
                memo.insert(
                    i,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| r.err("MEMOIZE on empty"))?,
                );
            }
            b'g' | b'h' | b'j' => {
                let i = match op {
                    b'g' => r.line()?.parse().map_err(|_| r.err("bad GET index"))?,
                    b'h' => r.u8()? as u64,
                    _ => r.le(4)?,
                };
                stack.push(
                    memo.get(&i)
                        .cloned()
                        .ok_or_else(|| r.err(format!("memo {i} unset")))?,
                );
            }
            b'0' => {
                pop!();
            }
            b'2' => {
                let top = stack.last().cloned().ok_or_else(|| r.err("DUP on empty"))?;
                stack.push(top);
            }
            b'1' => {
                let m = marks.pop().ok_or_else(|| r.err("no mark"))?;
                stack.truncate(m);
            }
            other => return Err(r.err(format!("unsupported opcode 0x{other:02x}"))),
        }
    }
}

fn pairs(items: Vec<Py>) -> Vec<(Py, Py)> {
    let mut out = vec![];
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

fn append(target: Option<&mut Py>, values: Vec<Py>) -> Result<(), String> {
    match target {
        Some(Py::List(l)) => l.extend(values),
        Some(Py::Object { args, .. }) => args.extend(values),
        _ => return Err("APPEND to a value that is not a list".into()),
    }
    Ok(())
}

fn set_items(target: Option<&mut Py>, kv: Vec<(Py, Py)>) -> Result<(), String> {
    match target {
        Some(Py::Dict(d)) => d.extend(kv),
        Some(Py::Object { items, .. }) => items.extend(kv),
        _ => return Err("SETITEM on a value that is not a dict".into()),
    }
    Ok(())
}

/// A numeric array read from a pickled `numpy.ndarray`: shape and values as f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Shape (C order).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f64>,
}

/// Decodes a pickled `numpy.ndarray` (the `_reconstruct` + state form of every protocol, or
/// protocol 5's `_frombuffer`) of a little-endian numeric dtype.
pub fn ndarray(v: &Py) -> Result<Array, String> {
    let Py::Object {
        callable,
        args,
        state,
        ..
    } = v
    else {
        return Err("not a numpy array".into());
    };
    let Py::Global(module, name) = callable.as_ref() else {
        return Err("not a numpy array".into());
    };
    let (shape, dtype, fortran, raw) = if name == "_reconstruct" && module.starts_with("numpy") {
        let s = state.as_ref().ok_or("numpy array without state")?;
        let t = s.items().ok_or("numpy state is not a tuple")?;
        if t.len() < 5 {
            return Err("short numpy state".into());
        }
        (
            &t[1],
            &t[2],
            t[3].as_int().unwrap_or(0) != 0,
            t[4].as_bytes().ok_or("numpy data is not bytes")?,
        )
    } else if name == "_frombuffer" && module.starts_with("numpy") {
        if args.len() < 4 {
            return Err("short _frombuffer call".into());
        }
        let order = args[3].as_text().unwrap_or_default();
        (
            &args[2],
            &args[1],
            order == "F",
            args[0].as_bytes().ok_or("numpy buffer is not bytes")?,
        )
    } else {
        return Err(format!("{module}.{name} is not a numpy array"));
    };
    let shape: Vec<usize> = shape
        .items()
        .ok_or("numpy shape is not a tuple")?
        .iter()
        .enumerate()
        .map(|(i, d)| dimension(d, &format!("numpy shape[{i}]")))
        .collect::<Result<_, _>>()?;
    let code = match dtype {
        Py::Object { args, .. } => args.first().and_then(Py::as_text),
        _ => None,
    }
    .ok_or("numpy dtype unreadable")?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("numpy shape {shape:?} overflows the size of an array"))?;
    let (width, read): (usize, fn(&[u8]) -> f64) = match code.as_str() {
        "f4" => (4, |b| f32::from_le_bytes(b.try_into().unwrap()) as f64),
        "f8" => (8, |b| f64::from_le_bytes(b.try_into().unwrap())),
        "i4" => (4, |b| i32::from_le_bytes(b.try_into().unwrap()) as f64),
        "i8" => (8, |b| i64::from_le_bytes(b.try_into().unwrap()) as f64),
        "u4" => (4, |b| u32::from_le_bytes(b.try_into().unwrap()) as f64),
        "i1" | "u1" | "b1" => (1, |b| b[0] as f64),
        other => return Err(format!("numpy dtype {other} not supported")),
    };
    if n.checked_mul(width) != Some(raw.len()) {
        return Err(format!(
            "numpy data has {} bytes for shape {shape:?} of {code}",
            raw.len()
        ));
    }
    let mut values: Vec<f64> = raw.chunks_exact(width).map(read).collect();
    if fortran && shape.len() == 2 {
        let (r, c) = (shape[0], shape[1]);
        let col = values.clone();
        for i in 0..r {
            for j in 0..c {
                values[i * c + j] = col[j * r + i];
            }
        }
    }
    Ok(Array { shape, values })
}

/// A dimension of a shape: a non-negative integer that fits `usize`.
fn dimension(d: &Py, field: &str) -> Result<usize, String> {
    let v = d
        .as_int()
        .ok_or_else(|| format!("{field} = {d:?} is not an integer"))?;
    usize::try_from(v).map_err(|_| format!("{field} = {v} is negative"))
}

/// A sparse matrix read from a pickled `scipy.sparse.csr_matrix`: shape and CSR arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    /// Rows and columns.
    pub shape: (usize, usize),
    /// Row pointers (`rows + 1`).
    pub indptr: Vec<usize>,
    /// Column of each stored value.
    pub indices: Vec<usize>,
    /// Stored values.
    pub data: Vec<f64>,
}

impl Csr {
    /// The dense row-major matrix.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.shape.0 * self.shape.1];
        for r in 0..self.shape.0 {
            for k in self.indptr[r]..self.indptr[r + 1] {
                out[r * self.shape.1 + self.indices[k]] += self.data[k] as f32;
            }
        }
        out
    }
}

/// Decodes a pickled `scipy.sparse.csr_matrix` (its `__dict__`: `_shape`, `indptr`, `indices`,
/// `data`).
pub fn csr_matrix(v: &Py) -> Result<Csr, String> {
    match v.class() {
        Some((m, n)) if m.starts_with("scipy.sparse") && n.starts_with("csr_") => {}
        Some((m, n)) => return Err(format!("{m}.{n} is not a scipy csr_matrix")),
        None => return Err("not a scipy csr_matrix".into()),
    }
    let shape = v
        .get("_shape")
        .or_else(|| v.get("shape"))
        .and_then(Py::items)
        .ok_or("csr_matrix without a shape")?;
    let dim = |i: usize| {
        shape
            .get(i)
            .ok_or_else(|| format!("csr_matrix shape {shape:?} is not 2-D"))
            .and_then(|d| dimension(d, &format!("csr_matrix shape[{i}]")))
    };
    let (rows, cols) = (dim(0)?, dim(1)?);
    if rows.checked_add(1).is_none() || rows.checked_mul(cols).is_none() {
        return Err(format!(
            "csr_matrix shape ({rows}, {cols}) overflows the size of an array"
        ));
    }
    let arr = |k: &str| -> Result<Array, String> {
        ndarray(v.get(k).ok_or(format!("csr_matrix without {k}"))?).map_err(|e| format!("{k}: {e}"))
    };
    let indptr: Vec<usize> = arr("indptr")?.values.iter().map(|&x| x as usize).collect();
    let indices: Vec<usize> = arr("indices")?.values.iter().map(|&x| x as usize).collect();
    let data = arr("data")?.values;
    if indptr.len() != rows + 1
        || indices.len() != data.len()
        || indptr.last().copied() != Some(data.len())
        || indptr.first().copied() != Some(0)
        || indptr.windows(2).any(|w| w[0] > w[1])
        || indices.iter().any(|&c| c >= cols)
    {
        return Err(format!("inconsistent csr_matrix of shape ({rows}, {cols})"));
    }
    Ok(Csr {
        shape: (rows, cols),
        indptr,
        indices,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_protocol_2_basics() {
        // pickle.dumps({'a': [1, -2, 300, 70000], 'b': (True, None, 1.5)}, protocol=2)
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01J\x70\x11\x01\x00eX\x01\x00\x00\x00bq\x03\x88NG?\xf8\x00\x00\x00\x00\x00\x00\x87q\x04u.";
        let v = load(bytes).unwrap();
        assert_eq!(
            v.get("a").unwrap(),
            &Py::List(vec![Py::Int(1), Py::Int(-2), Py::Int(300), Py::Int(70000)])
        );
        assert_eq!(
            v.get("b").unwrap(),
            &Py::Tuple(vec![Py::Bool(true), Py::None, Py::Float(1.5)])
        );
    }

    #[test]
    fn errors_name_the_byte() {
        let e = load(b"\x80\x02\xff").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.why.contains("0xff"));
        assert!(load(b"\x80\x02K").unwrap_err().why.contains("truncated"));
    }
}
