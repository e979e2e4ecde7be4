//! Registers to values and back: one generic decoder driven by the register's configured type,
//! byte/word order, string layout, scale and offset, and its inverse (`encode`, used by the
//! simulator and the batch writer). `plan` groups registers into read blocks.
//!
//! The decoder's words (`DataType`, `WordOrder`, `StringOrder`) are defined here; a register is
//! seen through the `Field` trait (where it is, how it is laid out), so this module knows
//! nothing of the config that describes it.

pub mod plan;

use crate::modbus::Table;

/// Order of the bytes of a multi-register value, `A` being the most significant byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOrder {
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringOrder {
    HighFirst,
    LowFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    /// One bit (0..=15) of a 16-bit register.
    Bit(u8),
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
    Float32,
    Float64,
    /// `len` registers of two ASCII characters each.
    Str {
        len: u16,
        order: StringOrder,
    },
}

impl DataType {
    /// How many registers (or bits, for coils and discrete inputs) a value of this type occupies.
    pub(crate) fn quantity(self) -> u16 {
        match self {
            DataType::Bool | DataType::Bit(_) | DataType::Int16 | DataType::UInt16 => 1,
            DataType::Int32 | DataType::UInt32 | DataType::Float32 => 2,
            DataType::Int64 | DataType::UInt64 | DataType::Float64 => 4,
            DataType::Str { len, .. } => len,
        }
    }
}

/// What the decoder and the read planner need to know of a register: where it is and how its
/// words become a value. The config's `Register` is one; this module knows nothing of the rest
/// of it (name, measurement, deadband).
pub trait Field {
    fn table(&self) -> Table;
    fn address(&self) -> u16;
    fn data_type(&self) -> DataType;
    fn order(&self) -> WordOrder;
    fn scale(&self) -> Option<f64>;
    fn offset(&self) -> Option<f64>;
    fn quantity(&self) -> u16 {
        self.data_type().quantity()
    }
    /// Scaled values are always floats, so a scale change never changes the field's type.
    fn is_scaled(&self) -> bool {
        self.scale().is_some() || self.offset().is_some()
    }
}

/// A decoded field value, typed the way it goes into InfluxDB.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Value {
    /// Numeric view for deadbands, edges and finish codes.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Str(_) => None,
        }
    }

    /// True when `self` differs from `last` by more than `deadband` (numbers) or at all.
    pub(crate) fn changed_from(&self, last: &Value, deadband: f64) -> bool {
        match (self.as_f64(), last.as_f64()) {
            (Some(a), Some(b)) if deadband > 0.0 => (a - b).abs() > deadband,
            _ => self != last,
        }
    }
}

/// Why a register produced no value this poll.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("value is {0} (not written: line protocol has no such value)")]
    NotFinite(f64),
    #[error("reply carried {got} words, the register needs {need}")]
    Short { got: usize, need: usize },
}

/// Arrange the register words into big-endian bytes (`A` first) according to `order`.
/// ABCD: words in order, high byte first. CDAB: words swapped. BADC: bytes swapped inside each
/// word. DCBA: both. A 16-bit value is affected only by the byte swap.
fn to_be_bytes(words: &[u16], order: WordOrder, out: &mut [u8; 8]) {
    let n = words.len().min(4);
    let swap_words = matches!(order, WordOrder::Cdab | WordOrder::Dcba);
    let swap_bytes = matches!(order, WordOrder::Badc | WordOrder::Dcba);
    for i in 0..n {
        let w = if swap_words {
            words[n - 1 - i]
        } else {
            words[i]
        };
        let [hi, lo] = w.to_be_bytes();
        let (a, b) = if swap_bytes { (lo, hi) } else { (hi, lo) };
        out[2 * i] = a;
        out[2 * i + 1] = b;
    }
}

/// Inverse of `to_be_bytes`.
fn from_be_bytes(bytes: &[u8], order: WordOrder) -> Vec<u16> {
    let n = bytes.len() / 2;
    let swap_words = matches!(order, WordOrder::Cdab | WordOrder::Dcba);
    let swap_bytes = matches!(order, WordOrder::Badc | WordOrder::Dcba);
    let mut words = vec![0u16; n];
    for i in 0..n {
        let (a, b) = (bytes[2 * i], bytes[2 * i + 1]);
        let w = if swap_bytes {
            u16::from_be_bytes([b, a])
        } else {
            u16::from_be_bytes([a, b])
        };
        let at = if swap_words { n - 1 - i } else { i };
        words[at] = w;
    }
    words
}

/// Characters of a string register area: 2 per register, NUL-terminated or space-padded.
/// Only printable ASCII is kept, so a garbled HMI area never puts control bytes into a field.
pub fn decode_string(words: &[u16], order: StringOrder) -> String {
    let mut s = String::with_capacity(words.len() * 2);
    'outer: for w in words {
        let [hi, lo] = w.to_be_bytes();
        let pair = match order {
            StringOrder::HighFirst => [hi, lo],
            StringOrder::LowFirst => [lo, hi],
        };
        for c in pair {
            if c == 0 {
                break 'outer;
            }
            if (0x20..0x7f).contains(&c) {
                s.push(char::from(c));
            }
        }
    }
    s.trim_end().to_string()
}

/// Pack ASCII text into `len` registers, NUL-padded. The caller has validated the text.
pub fn encode_string(text: &str, len: u16, order: StringOrder) -> Vec<u16> {
    let bytes = text.as_bytes();
    (0..usize::from(len))
        .map(|i| {
            let a = bytes.get(2 * i).copied().unwrap_or(0);
            let b = bytes.get(2 * i + 1).copied().unwrap_or(0);
            match order {
                StringOrder::HighFirst => u16::from_be_bytes([a, b]),
                StringOrder::LowFirst => u16::from_be_bytes([b, a]),
            }
        })
        .collect()
}

/// Decimal places of a configured scale or offset (`0.1` -> 1, `0.025` -> 3), at most 12.
pub(crate) fn decimals(x: f64) -> u32 {
    (0..12)
        .find(|&d| {
            let y = x * 10f64.powi(d as i32);
            (y - y.round()).abs() < 1e-9 * y.abs().max(1.0)
        })
        .unwrap_or(12)
}

/// The f64 that prints like the f32 does (`68.41477`, not `68.4147720336914`).
fn widen(f: f32) -> f64 {
    if !f.is_finite() {
        return f64::from(f);
    }
    f.to_string().parse().unwrap_or(f64::from(f))
}

/// Apply scale and offset. An integer register scaled by 0.1 is rounded to one decimal, so
/// `304 * 0.1` is written as `30.4`, not `30.400000000000002`.
fn scaled<F: Field + ?Sized>(reg: &F, raw: f64, integer: bool) -> Result<Value, DecodeError> {
    let (scale, offset) = (reg.scale().unwrap_or(1.0), reg.offset().unwrap_or(0.0));
    let mut v = raw * scale + offset;
    if integer && v.is_finite() {
        let p = 10f64.powi(decimals(scale).max(decimals(offset)) as i32);
        v = (v * p).round() / p;
    }
    if v.is_finite() {
        Ok(Value::Float(v))
    } else {
        Err(DecodeError::NotFinite(v))
    }
}

/// Decode a register from its words (holding and input registers).
pub(crate) fn decode_words<F: Field + ?Sized>(
    reg: &F,
    words: &[u16],
) -> Result<Value, DecodeError> {
    let need = usize::from(reg.quantity());
    if words.len() < need {
        return Err(DecodeError::Short {
            got: words.len(),
            need,
        });
    }
    let words = &words[..need];
    let mut b = [0u8; 8];
    to_be_bytes(words, reg.order(), &mut b);
    let int: i128 = match reg.data_type() {
        DataType::Str { order, .. } => return Ok(Value::Str(decode_string(words, order))),
        DataType::Bit(bit) => {
            let w = u16::from_be_bytes([b[0], b[1]]);
            return Ok(Value::Bool(w & (1 << bit) != 0));
        }
        DataType::Float32 => {
            return scaled(
                reg,
                widen(f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                false,
            )
        }
        DataType::Float64 => return scaled(reg, f64::from_be_bytes(b), false),
        DataType::Bool => return Ok(Value::Bool(words[0] != 0)),
        DataType::Int16 => i16::from_be_bytes([b[0], b[1]]).into(),
        DataType::UInt16 => u16::from_be_bytes([b[0], b[1]]).into(),
        DataType::Int32 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]).into(),
        DataType::UInt32 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]).into(),
        DataType::Int64 => i64::from_be_bytes(b).into(),
        DataType::UInt64 => u64::from_be_bytes(b).into(),
    };
    if reg.is_scaled() {
        return scaled(reg, int as f64, true);
    }
    Ok(match i64::try_from(int) {
        Ok(v) => Value::Int(v),
        // uint64 above i64::MAX: InfluxDB 1.x has no unsigned field type.
        Err(_) => Value::Float(int as f64),
    })
}

/// Decode a coil or discrete input.
pub(crate) fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

/// Encode a value into the register words that `decode_words` reads back as the same value
/// (before scale: the caller passes the raw number). Used by the simulator.
pub(crate) fn encode_words<F: Field + ?Sized>(reg: &F, raw: &Value) -> Vec<u16> {
    if let DataType::Str { len, order } = reg.data_type() {
        let text = match raw {
            Value::Str(s) => s.as_str(),
            _ => "",
        };
        return encode_string(text, len, order);
    }
    let x = raw.as_f64().unwrap_or(0.0);
    let bytes: Vec<u8> = match reg.data_type() {
        DataType::Bool => vec![0, u8::from(x != 0.0)],
        DataType::Bit(bit) => ((u16::from(x != 0.0)) << bit).to_be_bytes().to_vec(),
        DataType::Int16 => (x as i16).to_be_bytes().to_vec(),
        DataType::UInt16 => (x as u16).to_be_bytes().to_vec(),
        DataType::Int32 => (x as i32).to_be_bytes().to_vec(),
        DataType::UInt32 => (x as u32).to_be_bytes().to_vec(),
        DataType::Int64 => match raw {
            Value::Int(i) => i.to_be_bytes().to_vec(),
            _ => (x as i64).to_be_bytes().to_vec(),
        },
        DataType::UInt64 => match raw {
            Value::Int(i) => (*i as u64).to_be_bytes().to_vec(),
            _ => (x as u64).to_be_bytes().to_vec(),
        },
        DataType::Float32 => (x as f32).to_be_bytes().to_vec(),
        DataType::Float64 => x.to_be_bytes().to_vec(),
        DataType::Str { .. } => Vec::new(),
    };
    from_be_bytes(&bytes, reg.order())
}

#[cfg(test)]
mod tests;
