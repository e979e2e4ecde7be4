//! What the samples of a scanned register area look like: constant, counter, changing, ASCII
//! text runs (two characters per register, either byte order) and 32-bit pairs whose float value
//! is plausible in either word order. Pure functions over the sampled words.

use std::collections::BTreeMap;

/// The samples of one register: one entry per round, `None` where the read failed.
pub(crate) type Samples = Vec<Option<u16>>;

/// Byte order inside each register of a text run (the config's `string_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextOrder {
    HighFirst,
    LowFirst,
}

/// Word order of a 32-bit pair (the config's `order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WordOrder {
    /// High word first.
    Abcd,
    /// Low word first.
    Cdab,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Class {
    Constant(u16),
    /// Never decreasing, increased at least once.
    Counter,
    Changing,
    /// No sample could be read.
    Unread,
    Text {
        registers: u16,
        order: TextOrder,
        text: String,
    },
    Float {
        order: WordOrder,
        value: f32,
    },
}

/// A field found at `address`, `words` registers long.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub address: u16,
    pub words: u16,
    pub class: Class,
}

fn read_values(s: &Samples) -> Vec<u16> {
    s.iter().flatten().copied().collect()
}

/// One register on its own.
pub(crate) fn single(s: &Samples) -> Class {
    let v = read_values(s);
    let Some(&first) = v.first() else {
        return Class::Unread;
    };
    if v.iter().all(|&x| x == first) {
        return Class::Constant(first);
    }
    if v.windows(2).all(|w| w[1] >= w[0]) {
        return Class::Counter;
    }
    Class::Changing
}

fn printable(b: u8) -> bool {
    (0x20..=0x7E).contains(&b)
}

/// The two characters of a register in `order`, if both are text (NUL allowed as padding in
/// the second place only).
fn chars(w: u16, order: TextOrder) -> Option<[u8; 2]> {
    let [hi, lo] = w.to_be_bytes();
    let pair = match order {
        TextOrder::HighFirst => [hi, lo],
        TextOrder::LowFirst => [lo, hi],
    };
    (printable(pair[0]) && (printable(pair[1]) || pair[1] == 0)).then_some(pair)
}

/// How text-like a string is: adjacent characters of the same class (letters, digits) are
/// common in names and codes; a swapped byte order breaks them up.
fn text_score(t: &[u8]) -> usize {
    t.windows(2)
        .filter(|w| {
            (w[0].is_ascii_uppercase() && w[1].is_ascii_uppercase())
                || (w[0].is_ascii_lowercase() && w[1].is_ascii_lowercase())
                || (w[0].is_ascii_digit() && w[1].is_ascii_digit())
        })
        .count()
}

fn plausible_float(v: f32) -> bool {
    v.is_finite() && v != 0.0 && (1e-3..=1e7).contains(&v.abs())
}

fn float_of(a: u16, b: u16, order: WordOrder) -> f32 {
    let (hi, lo) = match order {
        WordOrder::Abcd => (a, b),
        WordOrder::Cdab => (b, a),
    };
    f32::from_bits((u32::from(hi) << 16) | u32::from(lo))
}

/// Fields of one contiguous range of registers (`regs`: address to samples, addresses
/// consecutive). Text runs of at least two registers come first, then float pairs, then single
/// registers.
pub(crate) fn fields(regs: &BTreeMap<u16, Samples>) -> Vec<Field> {
    let addrs: Vec<u16> = regs.keys().copied().collect();
    let last: Vec<Option<u16>> = addrs
        .iter()
        .map(|a| {
            regs.get(a)
                .and_then(|s| s.iter().rev().flatten().next().copied())
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < addrs.len() {
        let contiguous = |j: usize| j < addrs.len() && addrs[j] == addrs[i] + (j - i) as u16;
        // Text: the longest run of text registers (every sample text) in either order.
        let mut best: Option<(usize, TextOrder, Vec<u8>)> = None;
        for order in [TextOrder::HighFirst, TextOrder::LowFirst] {
            let mut j = i;
            let mut text: Vec<u8> = Vec::new();
            while contiguous(j) {
                let Some(s) = regs.get(&addrs[j]) else { break };
                let all_text =
                    !s.is_empty() && s.iter().all(|w| w.and_then(|w| chars(w, order)).is_some());
                let Some(pair) = last[j].and_then(|w| chars(w, order)) else {
                    break;
                };
                if !all_text {
                    break;
                }
                text.extend(pair.iter().filter(|&&b| b != 0));
                j += 1;
                if pair[1] == 0 {
                    break;
                }
            }
            let n = j - i;
            let letters = text.iter().filter(|b| b.is_ascii_alphabetic()).count();
            if n >= 2 && letters >= 1 {
                let better = match &best {
                    None => true,
                    Some((bn, _, bt)) => {
                        n > *bn || (n == *bn && text_score(&text) > text_score(bt))
                    }
                };
                if better {
                    best = Some((n, order, text));
                }
            }
        }
        if let Some((n, order, text)) = best {
            out.push(Field {
                address: addrs[i],
                words: n as u16,
                class: Class::Text {
                    registers: n as u16,
                    order,
                    text: String::from_utf8_lossy(&text).into_owned(),
                },
            });
            i += n;
            continue;
        }
        // Float pair: plausible in every sample, in one word order.
        if contiguous(i + 1) {
            let (a, b) = (&regs[&addrs[i]], &regs[&addrs[i + 1]]);
            let pairs: Vec<(u16, u16)> = a
                .iter()
                .zip(b)
                .filter_map(|(x, y)| Some(((*x)?, (*y)?)))
                .collect();
            let found = [WordOrder::Abcd, WordOrder::Cdab].into_iter().find(|&o| {
                !pairs.is_empty()
                    && pairs
                        .iter()
                        .all(|&(x, y)| plausible_float(float_of(x, y, o)))
            });
            if let (Some(order), Some(&(x, y))) = (found, pairs.last()) {
                out.push(Field {
                    address: addrs[i],
                    words: 2,
                    class: Class::Float {
                        order,
                        value: float_of(x, y, order),
                    },
                });
                i += 2;
                continue;
            }
        }
        out.push(Field {
            address: addrs[i],
            words: 1,
            class: single(&regs[&addrs[i]]),
        });
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(start: u16, rows: &[&[u16]]) -> BTreeMap<u16, Samples> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| (start + i as u16, r.iter().map(|&w| Some(w)).collect()))
            .collect()
    }

    fn words_of(text: &str, order: TextOrder) -> Vec<u16> {
        let mut b = text.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            b.push(0);
        }
        b.chunks(2)
            .map(|c| match order {
                TextOrder::HighFirst => u16::from_be_bytes([c[0], c[1]]),
                TextOrder::LowFirst => u16::from_be_bytes([c[1], c[0]]),
            })
            .collect()
    }

    #[test]
    fn singles_are_constant_counter_or_changing() {
        assert_eq!(single(&vec![Some(5); 4]), Class::Constant(5));
        assert_eq!(
            single(&vec![Some(1), Some(2), Some(2), Some(9)]),
            Class::Counter
        );
        assert_eq!(single(&vec![Some(3), Some(1), Some(4)]), Class::Changing);
        assert_eq!(single(&vec![None, None]), Class::Unread);
    }

    #[test]
    fn text_in_both_byte_orders_and_floats_in_both_word_orders() {
        for (text, order) in [
            ("BATCH123", TextOrder::HighFirst),
            ("BATCH123", TextOrder::LowFirst),
            ("B-77X", TextOrder::HighFirst),
        ] {
            let w = words_of(text, order);
            let rows: Vec<Vec<u16>> = w.iter().map(|&x| vec![x; 3]).collect();
            let refs: Vec<&[u16]> = rows.iter().map(|r| r.as_slice()).collect();
            let f = fields(&area(10, &refs));
            assert_eq!(f.len(), 1, "{text} {order:?}: {f:?}");
            assert_eq!(
                f[0].class,
                Class::Text {
                    registers: w.len() as u16,
                    order,
                    text: text.to_string()
                }
            );
        }
        let bits = 123.456f32.to_bits();
        let (hi, lo) = ((bits >> 16) as u16, bits as u16);
        let f = fields(&area(
            0,
            &[&[hi, hi], &[lo, lo], &[lo, lo], &[hi, hi], &[7, 8]],
        ));
        assert_eq!(f.len(), 3, "{f:?}");
        assert_eq!(
            f[0].class,
            Class::Float {
                order: WordOrder::Abcd,
                value: 123.456
            }
        );
        assert_eq!(
            f[1].class,
            Class::Float {
                order: WordOrder::Cdab,
                value: 123.456
            }
        );
        assert_eq!(f[2].class, Class::Counter);
    }

    #[test]
    fn small_integers_are_not_floats_or_text() {
        let f = fields(&area(0, &[&[0, 0], &[5, 5], &[300, 301], &[20, 20]]));
        let classes: Vec<Class> = f.into_iter().map(|f| f.class).collect();
        assert_eq!(
            classes,
            vec![
                Class::Constant(0),
                Class::Constant(5),
                Class::Counter,
                Class::Constant(20)
            ]
        );
    }
}
