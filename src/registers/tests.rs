use super::plan::{plan, split, ReadBlock};
use super::*;
use crate::config::{Measurement, Register};
use crate::modbus::Table;
use plan::DeviceLimits;

const ORDERS: [WordOrder; 4] = [
    WordOrder::Abcd,
    WordOrder::Cdab,
    WordOrder::Badc,
    WordOrder::Dcba,
];

/// A holding register at address 0 with no scale, offset or deadband.
fn reg(data_type: DataType, order: WordOrder) -> Register {
    Register {
        name: "r".into(),
        kind: Table::Holding,
        address: 0,
        data_type,
        order,
        scale: None,
        offset: None,
        measurement: Measurement::MediumFrequency,
        deadband: 0.0,
        read_once: false,
    }
}

fn scaled_reg(data_type: DataType, scale: Option<f64>, offset: Option<f64>) -> Register {
    Register {
        scale,
        offset,
        ..reg(data_type, WordOrder::Abcd)
    }
}

/// Assert that `words` decode to `expected` in `order`, and that `expected` encodes to `words`.
fn check_layout(data_type: DataType, order: WordOrder, words: &[u16], expected: Value) {
    let r = reg(data_type, order);
    assert_eq!(
        decode_words(&r, words),
        Ok(expected.clone()),
        "decode {data_type:?} {order:?} {words:04X?}"
    );
    assert_eq!(
        encode_words(&r, &expected),
        words,
        "encode {data_type:?} {order:?} {expected:?}"
    );
}

// =============================================================================================
// decode_words: byte layouts per type and word order
// =============================================================================================

#[test]
fn float32_in_all_word_orders() {
    // 123.456f32 is 0x42F6E979: bytes A=42 B=F6 C=E9 D=79.
    let v = Value::Float(123.456);
    check_layout(
        DataType::Float32,
        WordOrder::Abcd,
        &[0x42F6, 0xE979],
        v.clone(),
    );
    check_layout(
        DataType::Float32,
        WordOrder::Cdab,
        &[0xE979, 0x42F6],
        v.clone(),
    );
    check_layout(
        DataType::Float32,
        WordOrder::Badc,
        &[0xF642, 0x79E9],
        v.clone(),
    );
    check_layout(DataType::Float32, WordOrder::Dcba, &[0x79E9, 0xF642], v);
}

#[test]
fn float32_is_widened_to_the_shortest_decimal() {
    // A float32 holds 123.456 only approximately; the point must say 123.456, not the f64
    // expansion 123.45600128173828 of the f32.
    let r = reg(DataType::Float32, WordOrder::Abcd);
    assert_eq!(
        decode_words(&r, &[0x42F6, 0xE979]),
        Ok(Value::Float(123.456))
    );
    // -0.5 is 0xBF000000.
    assert_eq!(decode_words(&r, &[0xBF00, 0x0000]), Ok(Value::Float(-0.5)));
}

#[test]
fn float64_in_all_word_orders() {
    // 1234.5678 is 0x40934A456D5CFAAD.
    let v = Value::Float(1234.5678);
    let abcd = [0x4093, 0x4A45, 0x6D5C, 0xFAAD];
    check_layout(DataType::Float64, WordOrder::Abcd, &abcd, v.clone());
    // CDAB reverses the order of all four words; BADC swaps the bytes in each; DCBA both.
    check_layout(
        DataType::Float64,
        WordOrder::Cdab,
        &[0xFAAD, 0x6D5C, 0x4A45, 0x4093],
        v.clone(),
    );
    check_layout(
        DataType::Float64,
        WordOrder::Badc,
        &[0x9340, 0x454A, 0x5C6D, 0xADFA],
        v.clone(),
    );
    check_layout(
        DataType::Float64,
        WordOrder::Dcba,
        &[0xADFA, 0x5C6D, 0x454A, 0x9340],
        v,
    );
}

#[test]
fn int16_in_all_word_orders() {
    // A one-register value is affected by the byte swap only.
    let v = Value::Int(-2); // 0xFFFE
    check_layout(DataType::Int16, WordOrder::Abcd, &[0xFFFE], v.clone());
    check_layout(DataType::Int16, WordOrder::Cdab, &[0xFFFE], v.clone());
    check_layout(DataType::Int16, WordOrder::Badc, &[0xFEFF], v.clone());
    check_layout(DataType::Int16, WordOrder::Dcba, &[0xFEFF], v);
    check_layout(
        DataType::Int16,
        WordOrder::Abcd,
        &[0x8000],
        Value::Int(i64::from(i16::MIN)),
    );
    check_layout(
        DataType::Int16,
        WordOrder::Abcd,
        &[0x7FFF],
        Value::Int(32767),
    );
}

#[test]
fn uint16_in_all_word_orders() {
    let v = Value::Int(0x1234);
    check_layout(DataType::UInt16, WordOrder::Abcd, &[0x1234], v.clone());
    check_layout(DataType::UInt16, WordOrder::Cdab, &[0x1234], v.clone());
    check_layout(DataType::UInt16, WordOrder::Badc, &[0x3412], v.clone());
    check_layout(DataType::UInt16, WordOrder::Dcba, &[0x3412], v);
    // The top bit is not a sign for uint16.
    check_layout(
        DataType::UInt16,
        WordOrder::Abcd,
        &[0xFFFF],
        Value::Int(65535),
    );
}

#[test]
fn int32_in_all_word_orders() {
    let v = Value::Int(-2); // 0xFFFFFFFE
    check_layout(
        DataType::Int32,
        WordOrder::Abcd,
        &[0xFFFF, 0xFFFE],
        v.clone(),
    );
    check_layout(
        DataType::Int32,
        WordOrder::Cdab,
        &[0xFFFE, 0xFFFF],
        v.clone(),
    );
    check_layout(
        DataType::Int32,
        WordOrder::Badc,
        &[0xFFFF, 0xFEFF],
        v.clone(),
    );
    check_layout(DataType::Int32, WordOrder::Dcba, &[0xFEFF, 0xFFFF], v);
    let v = Value::Int(0x1234_5678);
    check_layout(
        DataType::Int32,
        WordOrder::Abcd,
        &[0x1234, 0x5678],
        v.clone(),
    );
    check_layout(
        DataType::Int32,
        WordOrder::Cdab,
        &[0x5678, 0x1234],
        v.clone(),
    );
    check_layout(
        DataType::Int32,
        WordOrder::Badc,
        &[0x3412, 0x7856],
        v.clone(),
    );
    check_layout(DataType::Int32, WordOrder::Dcba, &[0x7856, 0x3412], v);
}

#[test]
fn uint32_in_all_word_orders() {
    let v = Value::Int(0xFEDC_BA98); // above i32::MAX: must not come out negative
    check_layout(
        DataType::UInt32,
        WordOrder::Abcd,
        &[0xFEDC, 0xBA98],
        v.clone(),
    );
    check_layout(
        DataType::UInt32,
        WordOrder::Cdab,
        &[0xBA98, 0xFEDC],
        v.clone(),
    );
    check_layout(
        DataType::UInt32,
        WordOrder::Badc,
        &[0xDCFE, 0x98BA],
        v.clone(),
    );
    check_layout(DataType::UInt32, WordOrder::Dcba, &[0x98BA, 0xDCFE], v);
}

#[test]
fn int64_in_all_word_orders() {
    let v = Value::Int(0x0102_0304_0506_0708);
    let abcd = [0x0102, 0x0304, 0x0506, 0x0708];
    check_layout(DataType::Int64, WordOrder::Abcd, &abcd, v.clone());
    check_layout(
        DataType::Int64,
        WordOrder::Cdab,
        &[0x0708, 0x0506, 0x0304, 0x0102],
        v.clone(),
    );
    check_layout(
        DataType::Int64,
        WordOrder::Badc,
        &[0x0201, 0x0403, 0x0605, 0x0807],
        v.clone(),
    );
    check_layout(
        DataType::Int64,
        WordOrder::Dcba,
        &[0x0807, 0x0605, 0x0403, 0x0201],
        v,
    );
    let min = Value::Int(i64::MIN);
    check_layout(
        DataType::Int64,
        WordOrder::Abcd,
        &[0x8000, 0, 0, 0],
        min.clone(),
    );
    check_layout(DataType::Int64, WordOrder::Cdab, &[0, 0, 0, 0x8000], min);
}

#[test]
fn uint64_in_all_word_orders() {
    let v = Value::Int(0x0102_0304_0506_0708);
    check_layout(
        DataType::UInt64,
        WordOrder::Abcd,
        &[0x0102, 0x0304, 0x0506, 0x0708],
        v.clone(),
    );
    check_layout(
        DataType::UInt64,
        WordOrder::Dcba,
        &[0x0807, 0x0605, 0x0403, 0x0201],
        v,
    );
    check_layout(
        DataType::UInt64,
        WordOrder::Abcd,
        &[0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF],
        Value::Int(i64::MAX),
    );
}

#[test]
fn uint64_above_i64_max_is_a_float() {
    // InfluxDB 1.x has no unsigned integers, so values that do not fit an i64 become floats
    // (with the precision a float has) instead of wrapping to negative numbers.
    let big = 0xFEDC_BA98_7654_3210u64;
    let expected = Value::Float(big as f64);
    let cases = [
        (WordOrder::Abcd, [0xFEDC, 0xBA98, 0x7654, 0x3210]),
        (WordOrder::Cdab, [0x3210, 0x7654, 0xBA98, 0xFEDC]),
        (WordOrder::Badc, [0xDCFE, 0x98BA, 0x5476, 0x1032]),
        (WordOrder::Dcba, [0x1032, 0x5476, 0x98BA, 0xDCFE]),
    ];
    for (order, words) in cases {
        let r = reg(DataType::UInt64, order);
        assert_eq!(decode_words(&r, &words), Ok(expected.clone()), "{order:?}");
    }
    // The first value past i64::MAX.
    let r = reg(DataType::UInt64, WordOrder::Abcd);
    assert_eq!(
        decode_words(&r, &[0x8000, 0, 0, 0]),
        Ok(Value::Float(9_223_372_036_854_775_808.0))
    );
    assert_eq!(
        decode_words(&r, &[0xFFFF; 4]),
        Ok(Value::Float(u64::MAX as f64))
    );
}

#[test]
fn bit_of_a_register() {
    let r = |bit| reg(DataType::Bit(bit), WordOrder::Abcd);
    assert_eq!(decode_words(&r(3), &[0x0008]), Ok(Value::Bool(true)));
    assert_eq!(decode_words(&r(2), &[0x0008]), Ok(Value::Bool(false)));
    assert_eq!(decode_words(&r(0), &[0x0001]), Ok(Value::Bool(true)));
    assert_eq!(decode_words(&r(15), &[0x8000]), Ok(Value::Bool(true)));
    assert_eq!(decode_words(&r(15), &[0x7FFF]), Ok(Value::Bool(false)));
}

#[test]
fn bit_numbering_follows_the_byte_swap() {
    // In BADC and DCBA the register's bytes are swapped before the bits are numbered, so
    // bit 3 of the value is bit 11 of the word on the wire.
    for order in [WordOrder::Badc, WordOrder::Dcba] {
        let r = reg(DataType::Bit(3), order);
        assert_eq!(
            decode_words(&r, &[0x0800]),
            Ok(Value::Bool(true)),
            "{order:?}"
        );
        assert_eq!(
            decode_words(&r, &[0x0008]),
            Ok(Value::Bool(false)),
            "{order:?}"
        );
    }
    for order in [WordOrder::Abcd, WordOrder::Cdab] {
        let r = reg(DataType::Bit(3), order);
        assert_eq!(
            decode_words(&r, &[0x0008]),
            Ok(Value::Bool(true)),
            "{order:?}"
        );
    }
}

#[test]
fn bool_register_decodes_to_a_bool_value() {
    // A `bool` holding register is non-zero for true. Its value must be a boolean like a coil's
    // (`decode_bit`), so that the field has the same InfluxDB type, and `encode_words` (which
    // takes `Value::Bool`) must read back as what it wrote.
    for order in ORDERS {
        let r = reg(DataType::Bool, order);
        assert_eq!(
            decode_words(&r, &[0x0000]),
            Ok(Value::Bool(false)),
            "{order:?}"
        );
        assert_eq!(
            decode_words(&r, &[0x0001]),
            Ok(Value::Bool(true)),
            "{order:?}"
        );
        assert_eq!(
            decode_words(&r, &[0xFF00]),
            Ok(Value::Bool(true)),
            "{order:?}"
        );
        let words = encode_words(&r, &Value::Bool(true));
        assert_eq!(decode_words(&r, &words), Ok(Value::Bool(true)), "{order:?}");
    }
}

#[test]
fn decode_bit_is_a_bool() {
    assert_eq!(decode_bit(true), Value::Bool(true));
    assert_eq!(decode_bit(false), Value::Bool(false));
}

#[test]
fn too_few_words_is_short() {
    let cases = [
        (DataType::Int16, 0, 1),
        (DataType::Float32, 1, 2),
        (DataType::UInt64, 3, 4),
        (DataType::Float64, 2, 4),
        (
            DataType::Str {
                len: 5,
                order: StringOrder::HighFirst,
            },
            4,
            5,
        ),
    ];
    for (data_type, got, need) in cases {
        let r = reg(data_type, WordOrder::Abcd);
        assert_eq!(
            decode_words(&r, &vec![0; got]),
            Err(DecodeError::Short { got, need }),
            "{data_type:?}"
        );
    }
}

#[test]
fn words_after_the_value_are_ignored() {
    // The poller passes the rest of the block from the register's offset on.
    let r = reg(DataType::Int32, WordOrder::Abcd);
    assert_eq!(
        decode_words(&r, &[0x0000, 0x0005, 0xFFFF, 0xFFFF]),
        Ok(Value::Int(5))
    );
    let r = reg(DataType::Int16, WordOrder::Abcd);
    assert_eq!(decode_words(&r, &[0x0007, 0x1234]), Ok(Value::Int(7)));
}

// =============================================================================================
// Scale and offset
// =============================================================================================

#[test]
fn scaled_integers_are_rounded_to_the_scale_decimals() {
    // 304 * 0.1 is 30.400000000000002 in f64; the point must say 30.4.
    let r = scaled_reg(DataType::Int16, Some(0.1), None);
    assert_eq!(decode_words(&r, &[304]), Ok(Value::Float(30.4)));
    // 3 * 0.1 is 0.30000000000000004.
    assert_eq!(decode_words(&r, &[3]), Ok(Value::Float(0.3)));
    // Negative: -123 (0xFF85) * 0.1.
    assert_eq!(decode_words(&r, &[0xFF85]), Ok(Value::Float(-12.3)));

    let r = scaled_reg(DataType::UInt16, Some(0.01), None);
    assert_eq!(decode_words(&r, &[725]), Ok(Value::Float(7.25)));
    assert_eq!(decode_words(&r, &[1]), Ok(Value::Float(0.01)));

    let r = scaled_reg(DataType::UInt16, Some(0.025), None);
    assert_eq!(decode_words(&r, &[1234]), Ok(Value::Float(30.85)));

    let r = scaled_reg(DataType::UInt32, Some(0.001), None);
    assert_eq!(
        decode_words(&r, &[0x0001, 0x0000]),
        Ok(Value::Float(65.536))
    );
}

#[test]
fn offset_is_added_after_scaling() {
    let r = scaled_reg(DataType::Int16, Some(0.1), Some(-40.0));
    assert_eq!(decode_words(&r, &[654]), Ok(Value::Float(25.4)));
    // The offset's decimals count too: 0.5 needs one decimal even with an integer scale.
    let r = scaled_reg(DataType::UInt16, Some(2.0), Some(0.5));
    assert_eq!(decode_words(&r, &[10]), Ok(Value::Float(20.5)));
    let r = scaled_reg(DataType::UInt16, Some(0.1), Some(0.05));
    assert_eq!(decode_words(&r, &[3]), Ok(Value::Float(0.35)));
}

#[test]
fn scale_or_offset_always_gives_a_float() {
    // So that changing a scale never changes the field's type in InfluxDB.
    let r = scaled_reg(DataType::UInt16, Some(1.0), None);
    assert_eq!(decode_words(&r, &[7]), Ok(Value::Float(7.0)));
    let r = scaled_reg(DataType::UInt16, None, Some(0.0));
    assert_eq!(decode_words(&r, &[7]), Ok(Value::Float(7.0)));
    let r = scaled_reg(DataType::Int16, None, Some(-40.0));
    assert_eq!(decode_words(&r, &[5]), Ok(Value::Float(-35.0)));
    let r = scaled_reg(DataType::Int64, Some(10.0), None);
    assert_eq!(decode_words(&r, &[0, 0, 0, 3]), Ok(Value::Float(30.0)));
    // A uint64 above i64::MAX is scaled like any other value.
    let r = scaled_reg(DataType::UInt64, Some(0.5), None);
    assert_eq!(
        decode_words(&r, &[0x8000, 0, 0, 0]),
        Ok(Value::Float(4_611_686_018_427_387_904.0))
    );
}

#[test]
fn scaled_floats_are_not_rounded() {
    // Rounding is for integer registers, whose precision the scale defines; a float keeps its
    // own decimals (123.456 * 2 would become 246.9 if it were rounded to the scale).
    let r = scaled_reg(DataType::Float32, Some(2.0), None);
    assert_eq!(
        decode_words(&r, &[0x42F6, 0xE979]),
        Ok(Value::Float(246.912))
    );
    let r = scaled_reg(DataType::Float64, Some(1.0), Some(0.5));
    assert_eq!(
        decode_words(&r, &[0x4093, 0x4A45, 0x6D5C, 0xFAAD]),
        Ok(Value::Float(1235.0678))
    );
}

#[test]
fn non_finite_floats_are_not_finite_errors() {
    let f32_cases: [([u16; 2], f64); 3] = [
        ([0x7FC0, 0x0000], f64::NAN),
        ([0x7F80, 0x0000], f64::INFINITY),
        ([0xFF80, 0x0000], f64::NEG_INFINITY),
    ];
    for (words, bad) in f32_cases {
        for r in [
            reg(DataType::Float32, WordOrder::Abcd),
            scaled_reg(DataType::Float32, Some(0.1), Some(1.0)),
        ] {
            match decode_words(&r, &words) {
                Err(DecodeError::NotFinite(v)) => {
                    assert!(v.is_nan() == bad.is_nan() && (bad.is_nan() || v == bad));
                }
                other => panic!("{words:04X?} gave {other:?}"),
            }
        }
    }
    let r = reg(DataType::Float64, WordOrder::Abcd);
    assert!(matches!(
        decode_words(&r, &[0x7FF8, 0, 0, 0]),
        Err(DecodeError::NotFinite(v)) if v.is_nan()
    ));
    assert_eq!(
        decode_words(&r, &[0x7FF0, 0, 0, 0]),
        Err(DecodeError::NotFinite(f64::INFINITY))
    );
}

#[test]
fn finite_float_scaled_to_infinity_is_not_finite() {
    // f64::MAX * 10 overflows: the result, not only the raw value, must be finite.
    let r = scaled_reg(DataType::Float64, Some(10.0), None);
    let words = encode_words(
        &reg(DataType::Float64, WordOrder::Abcd),
        &Value::Float(f64::MAX),
    );
    assert_eq!(
        decode_words(&r, &words),
        Err(DecodeError::NotFinite(f64::INFINITY))
    );
}

#[test]
fn decimals_of_scales() {
    assert_eq!(decimals(1.0), 0);
    assert_eq!(decimals(10.0), 0);
    assert_eq!(decimals(-40.0), 0);
    assert_eq!(decimals(0.1), 1);
    assert_eq!(decimals(-0.5), 1);
    assert_eq!(decimals(0.01), 2);
    assert_eq!(decimals(0.025), 3);
    assert_eq!(decimals(0.001), 3);
    assert_eq!(decimals(0.000001), 6);
}

// =============================================================================================
// Strings
// =============================================================================================

fn string_reg(len: u16, order: StringOrder) -> Register {
    reg(DataType::Str { len, order }, WordOrder::Abcd)
}

#[test]
fn string_high_byte_first() {
    let r = string_reg(2, StringOrder::HighFirst);
    // 'A' = 0x41, 'B' = 0x42, ...: "AB" is 0x4142 with the first character in the high byte.
    assert_eq!(
        decode_words(&r, &[0x4142, 0x4344]),
        Ok(Value::Str("ABCD".into()))
    );
}

#[test]
fn string_low_byte_first() {
    let r = string_reg(2, StringOrder::LowFirst);
    assert_eq!(
        decode_words(&r, &[0x4241, 0x4443]),
        Ok(Value::Str("ABCD".into()))
    );
}

#[test]
fn string_ignores_the_word_order() {
    // Strings have their own byte order; the numeric word order does not reverse them.
    for order in ORDERS {
        let r = reg(
            DataType::Str {
                len: 3,
                order: StringOrder::HighFirst,
            },
            order,
        );
        assert_eq!(
            decode_words(&r, &[0x4A45, 0x5430, 0x3100]),
            Ok(Value::Str("JET01".into())),
            "{order:?}"
        );
    }
}

#[test]
fn string_ends_at_the_first_nul() {
    let r = string_reg(4, StringOrder::HighFirst);
    // "AB", then "\0C": the C after the terminator is stale HMI memory, not text.
    assert_eq!(
        decode_words(&r, &[0x4142, 0x0043, 0x4445, 0x4647]),
        Ok(Value::Str("AB".into()))
    );
    // A NUL in the low byte (the second character) ends it too.
    assert_eq!(
        decode_words(&r, &[0x4142, 0x4300, 0x4445, 0x4647]),
        Ok(Value::Str("ABC".into()))
    );
    let r = string_reg(4, StringOrder::LowFirst);
    assert_eq!(
        decode_words(&r, &[0x4241, 0x0043, 0x4445, 0x4647]),
        Ok(Value::Str("ABC".into()))
    );
    // All NUL: an empty string.
    assert_eq!(decode_words(&r, &[0; 4]), Ok(Value::Str(String::new())));
}

#[test]
fn string_trailing_spaces_are_trimmed() {
    let r = string_reg(4, StringOrder::HighFirst);
    assert_eq!(
        decode_words(&r, &[0x4142, 0x4320, 0x2020, 0x2020]),
        Ok(Value::Str("ABC".into()))
    );
    // Spaces inside the text stay.
    assert_eq!(
        decode_words(&r, &[0x4120, 0x4220, 0x2000, 0x0000]),
        Ok(Value::Str("A B".into()))
    );
}

#[test]
fn string_non_printable_bytes_are_dropped() {
    let r = string_reg(4, StringOrder::HighFirst);
    // 0x01 (control), 0x7F (DEL), 0xC3 0xA9 (UTF-8 é) and 0x0A (newline) are not printable
    // ASCII and must not reach a field value.
    assert_eq!(
        decode_words(&r, &[0x4101, 0x7F42, 0xC3A9, 0x0A43]),
        Ok(Value::Str("ABC".into()))
    );
    // Printable ASCII runs from space to tilde.
    assert_eq!(
        decode_words(&r, &[0x7E21, 0x0000, 0, 0]),
        Ok(Value::Str("~!".into()))
    );
}

#[test]
fn decode_string_directly() {
    assert_eq!(decode_string(&[0x4F4B], StringOrder::HighFirst), "OK");
    assert_eq!(decode_string(&[0x4F4B], StringOrder::LowFirst), "KO");
    assert_eq!(decode_string(&[], StringOrder::HighFirst), "");
}

#[test]
fn encode_string_pads_with_nul() {
    assert_eq!(
        encode_string("ABC", 3, StringOrder::HighFirst),
        vec![0x4142, 0x4300, 0x0000]
    );
    assert_eq!(
        encode_string("ABC", 3, StringOrder::LowFirst),
        vec![0x4241, 0x0043, 0x0000]
    );
    assert_eq!(
        encode_string("", 2, StringOrder::HighFirst),
        vec![0x0000, 0x0000]
    );
}

#[test]
fn encode_string_truncates_to_the_area() {
    assert_eq!(
        encode_string("ABCDEF", 2, StringOrder::HighFirst),
        vec![0x4142, 0x4344]
    );
    assert!(encode_string("ABC", 0, StringOrder::HighFirst).is_empty());
}

// =============================================================================================
// encode_words round trips
// =============================================================================================

/// Values each type must carry unchanged through `encode_words` and `decode_words`.
fn samples(data_type: DataType) -> Vec<Value> {
    let ints = |v: &[i64]| v.iter().map(|&i| Value::Int(i)).collect::<Vec<_>>();
    match data_type {
        DataType::Bool => vec![Value::Bool(false), Value::Bool(true)],
        DataType::Bit(_) => vec![Value::Bool(false), Value::Bool(true)],
        DataType::Int16 => ints(&[i16::MIN.into(), -1, 0, 1, 12345, i16::MAX.into()]),
        DataType::UInt16 => ints(&[0, 1, 0x8000, 0xABCD, u16::MAX.into()]),
        DataType::Int32 => ints(&[i32::MIN.into(), -70000, -1, 0, 0x1234_5678, i32::MAX.into()]),
        DataType::UInt32 => ints(&[0, 70000, 0x8000_0000, u32::MAX.into()]),
        DataType::Int64 => ints(&[i64::MIN, -1, 0, 0x0102_0304_0506_0708, i64::MAX]),
        DataType::UInt64 => {
            let mut v = ints(&[0, 1, 0x0102_0304_0506_0708, i64::MAX]);
            v.push(Value::Float(9_223_372_036_854_775_808.0));
            v.push(Value::Float(0xFEDC_BA98_7654_3210u64 as f64));
            v.push(Value::Float(u64::MAX as f64));
            v
        }
        DataType::Float32 => [0.0, -0.5, 1.0, 123.456, 68.41477, -3.4e38, 1e-30]
            .into_iter()
            .map(Value::Float)
            .collect(),
        DataType::Float64 => [
            0.0,
            -0.5,
            1234.5678,
            std::f64::consts::PI,
            f64::MAX,
            f64::MIN_POSITIVE,
        ]
        .into_iter()
        .map(Value::Float)
        .collect(),
        DataType::Str { .. } => ["", "A", "AB", "BATCH-42", "JET 01"]
            .into_iter()
            .map(|s| Value::Str(s.into()))
            .collect(),
    }
}

#[test]
fn encode_then_decode_round_trips_every_type_and_order() {
    // `Bool` registers are checked in `bool_register_decodes_to_a_bool_value`.
    let mut types = vec![
        DataType::Int16,
        DataType::UInt16,
        DataType::Int32,
        DataType::UInt32,
        DataType::Int64,
        DataType::UInt64,
        DataType::Float32,
        DataType::Float64,
        DataType::Str {
            len: 4,
            order: StringOrder::HighFirst,
        },
        DataType::Str {
            len: 5,
            order: StringOrder::LowFirst,
        },
    ];
    types.extend((0..16).map(DataType::Bit));
    for data_type in types {
        for order in ORDERS {
            let r = reg(data_type, order);
            for v in samples(data_type) {
                let words = encode_words(&r, &v);
                assert_eq!(
                    words.len(),
                    usize::from(r.quantity()),
                    "{data_type:?} {order:?} {v:?}"
                );
                assert_eq!(
                    decode_words(&r, &words),
                    Ok(v.clone()),
                    "{data_type:?} {order:?} {v:?} -> {words:04X?}"
                );
            }
        }
    }
}

#[test]
fn decode_then_encode_round_trips_the_words() {
    // Every word pattern of a 32-bit integer comes back to the same words.
    let patterns: [[u16; 2]; 5] = [
        [0x0000, 0x0000],
        [0xFFFF, 0xFFFF],
        [0x8000, 0x0001],
        [0x1234, 0x5678],
        [0x00FF, 0xFF00],
    ];
    for data_type in [DataType::Int32, DataType::UInt32] {
        for order in ORDERS {
            let r = reg(data_type, order);
            for words in patterns {
                let v = decode_words(&r, &words).unwrap();
                assert_eq!(encode_words(&r, &v), words, "{data_type:?} {order:?}");
            }
        }
    }
}

#[test]
fn encode_bit_sets_only_its_bit() {
    let r = reg(DataType::Bit(5), WordOrder::Abcd);
    assert_eq!(encode_words(&r, &Value::Bool(true)), vec![0x0020]);
    assert_eq!(encode_words(&r, &Value::Bool(false)), vec![0x0000]);
    let r = reg(DataType::Bit(5), WordOrder::Badc);
    assert_eq!(encode_words(&r, &Value::Bool(true)), vec![0x2000]);
}

#[test]
fn encode_a_string_register_from_a_non_string_is_empty() {
    let r = string_reg(2, StringOrder::HighFirst);
    assert_eq!(encode_words(&r, &Value::Int(5)), vec![0, 0]);
}

// =============================================================================================
// Value
// =============================================================================================

#[test]
fn value_as_f64() {
    assert_eq!(Value::Float(1.5).as_f64(), Some(1.5));
    assert_eq!(Value::Int(-3).as_f64(), Some(-3.0));
    assert_eq!(Value::Bool(true).as_f64(), Some(1.0));
    assert_eq!(Value::Bool(false).as_f64(), Some(0.0));
    assert_eq!(Value::Str("1".into()).as_f64(), None);
}

#[test]
fn value_changed_from_uses_the_deadband() {
    let a = Value::Float(80.0);
    assert!(!Value::Float(80.5).changed_from(&a, 0.5));
    assert!(Value::Float(80.6).changed_from(&a, 0.5));
    assert!(Value::Float(79.4).changed_from(&a, 0.5));
    assert!(!Value::Float(80.0).changed_from(&a, 0.0));
    // Without a deadband any difference counts.
    assert!(Value::Float(80.000001).changed_from(&a, 0.0));
    assert!(Value::Int(2).changed_from(&Value::Int(1), 0.0));
    assert!(!Value::Int(5).changed_from(&Value::Int(3), 2.0));
    // Strings compare as text whatever the deadband.
    assert!(Value::Str("B".into()).changed_from(&Value::Str("A".into()), 10.0));
    assert!(!Value::Str("A".into()).changed_from(&Value::Str("A".into()), 10.0));
}

// =============================================================================================
// plan: read blocks
// =============================================================================================

const LIMITS: DeviceLimits = DeviceLimits {
    max_registers: 123,
    max_bits: 2000,
    max_gap: 10,
};

/// A register of `kind` at `address`; `data_type` decides how many registers it spans.
fn at(kind: Table, address: u16, data_type: DataType) -> Register {
    Register {
        name: format!("{}_{address}", kind.as_str()),
        kind,
        address,
        ..reg(data_type, WordOrder::Abcd)
    }
}

fn holding(address: u16) -> Register {
    at(Table::Holding, address, DataType::UInt16)
}

fn coil(address: u16) -> Register {
    at(Table::Coil, address, DataType::Bool)
}

fn all(registers: &[Register]) -> Vec<usize> {
    (0..registers.len()).collect()
}

fn block(kind: Table, address: u16, quantity: u16, members: &[usize]) -> ReadBlock {
    ReadBlock {
        kind,
        address,
        quantity,
        members: members.to_vec(),
    }
}

#[test]
fn contiguous_registers_are_one_block() {
    let regs: Vec<Register> = (0..10).map(holding).collect();
    let blocks = plan(&regs, &all(&regs), &LIMITS);
    assert_eq!(blocks, vec![block(Table::Holding, 0, 10, &all(&regs))]);
}

#[test]
fn multi_register_values_extend_the_block() {
    let regs = vec![
        at(Table::Holding, 100, DataType::Float32), // 100..102
        at(Table::Holding, 102, DataType::UInt16),  // 102
        at(Table::Holding, 103, DataType::Float64), // 103..107
    ];
    assert_eq!(
        plan(&regs, &all(&regs), &LIMITS),
        vec![block(Table::Holding, 100, 7, &[0, 1, 2])]
    );
}

#[test]
fn registers_are_sorted_by_address() {
    // The configured order does not matter; members keep their configured indices.
    let regs = vec![holding(5), holding(3), holding(4)];
    assert_eq!(
        plan(&regs, &all(&regs), &LIMITS),
        vec![block(Table::Holding, 3, 3, &[1, 2, 0])]
    );
}

#[test]
fn gap_up_to_max_gap_is_bridged() {
    // Registers 0 and 11: the 10 unused registers 1..=10 are read along.
    let regs = vec![holding(0), holding(11)];
    assert_eq!(
        plan(&regs, &all(&regs), &LIMITS),
        vec![block(Table::Holding, 0, 12, &[0, 1])]
    );
}

#[test]
fn gap_larger_than_max_gap_is_not_bridged() {
    // Registers 0 and 12: 11 unused registers in between.
    let regs = vec![holding(0), holding(12)];
    assert_eq!(
        plan(&regs, &all(&regs), &LIMITS),
        vec![
            block(Table::Holding, 0, 1, &[0]),
            block(Table::Holding, 12, 1, &[1]),
        ]
    );
}

#[test]
fn max_gap_zero_bridges_nothing_but_joins_neighbours() {
    let limits = DeviceLimits {
        max_gap: 0,
        ..LIMITS
    };
    let regs = vec![holding(0), holding(1), holding(3)];
    assert_eq!(
        plan(&regs, &all(&regs), &limits),
        vec![
            block(Table::Holding, 0, 2, &[0, 1]),
            block(Table::Holding, 3, 1, &[2]),
        ]
    );
}

#[test]
fn blocks_stay_within_max_registers() {
    let limits = DeviceLimits {
        max_registers: 10,
        ..LIMITS
    };
    let regs: Vec<Register> = (0..25).map(holding).collect();
    let blocks = plan(&regs, &all(&regs), &limits);
    // ceil(25 / 10) = 3 requests, the fewest possible.
    assert_eq!(
        blocks,
        vec![
            block(Table::Holding, 0, 10, &(0..10).collect::<Vec<_>>()),
            block(Table::Holding, 10, 10, &(10..20).collect::<Vec<_>>()),
            block(Table::Holding, 20, 5, &(20..25).collect::<Vec<_>>()),
        ]
    );
}

#[test]
fn a_value_never_straddles_two_blocks() {
    // With room for one more register, a float32 starts a new block instead of being cut.
    let limits = DeviceLimits {
        max_registers: 10,
        ..LIMITS
    };
    let mut regs: Vec<Register> = (0..9).map(holding).collect();
    regs.push(at(Table::Holding, 9, DataType::Float32));
    let blocks = plan(&regs, &all(&regs), &limits);
    assert_eq!(
        blocks,
        vec![
            block(Table::Holding, 0, 9, &(0..9).collect::<Vec<_>>()),
            block(Table::Holding, 9, 2, &[9]),
        ]
    );
}

#[test]
fn a_bridged_gap_counts_against_the_limit() {
    let limits = DeviceLimits {
        max_registers: 10,
        max_gap: 10,
        ..LIMITS
    };
    // 0 and 9 fit (10 registers read); 0 and 10 would need 11.
    let regs = vec![holding(0), holding(9)];
    assert_eq!(plan(&regs, &all(&regs), &limits).len(), 1);
    let regs = vec![holding(0), holding(10)];
    assert_eq!(plan(&regs, &all(&regs), &limits).len(), 2);
}

#[test]
fn kinds_never_share_a_block() {
    let regs = vec![
        at(Table::Holding, 0, DataType::UInt16),
        at(Table::Input, 1, DataType::UInt16),
        at(Table::Holding, 1, DataType::UInt16),
        at(Table::Input, 0, DataType::UInt16),
        at(Table::Coil, 0, DataType::Bool),
        at(Table::DiscreteInput, 1, DataType::Bool),
        at(Table::Coil, 1, DataType::Bool),
        at(Table::DiscreteInput, 0, DataType::Bool),
    ];
    let mut blocks = plan(&regs, &all(&regs), &LIMITS);
    blocks.sort_by_key(|b| b.kind);
    assert_eq!(
        blocks,
        vec![
            block(Table::Coil, 0, 2, &[4, 6]),
            block(Table::DiscreteInput, 0, 2, &[7, 5]),
            block(Table::Holding, 0, 2, &[0, 2]),
            block(Table::Input, 0, 2, &[3, 1]),
        ]
    );
}

#[test]
fn adjacent_holding_and_input_registers_stay_apart() {
    // Holding 0..=4 and input 5..=9 are contiguous in numbers but different tables.
    let mut regs: Vec<Register> = (0..5).map(holding).collect();
    regs.extend((5..10).map(|a| at(Table::Input, a, DataType::UInt16)));
    let blocks = plan(&regs, &all(&regs), &LIMITS);
    assert_eq!(blocks.len(), 2);
    assert!(blocks
        .iter()
        .all(|b| b.members.iter().all(|&i| regs[i].kind == b.kind)));
}

#[test]
fn coils_use_max_bits() {
    let limits = DeviceLimits {
        max_registers: 10,
        max_bits: 2000,
        max_gap: 10,
    };
    let regs: Vec<Register> = (0..100).map(coil).collect();
    assert_eq!(
        plan(&regs, &all(&regs), &limits),
        vec![block(Table::Coil, 0, 100, &all(&regs))]
    );
    let limits = DeviceLimits {
        max_bits: 16,
        ..limits
    };
    let blocks = plan(&regs, &all(&regs), &limits);
    assert_eq!(blocks.len(), 7); // ceil(100 / 16)
    assert!(blocks.iter().all(|b| b.quantity <= 16));
}

#[test]
fn registers_sharing_an_address_share_a_block() {
    // Two bits of one status word are read once.
    let regs = vec![
        at(Table::Holding, 5, DataType::Bit(0)),
        at(Table::Holding, 5, DataType::Bit(7)),
    ];
    assert_eq!(
        plan(&regs, &all(&regs), &LIMITS),
        vec![block(Table::Holding, 5, 1, &[0, 1])]
    );
}

#[test]
fn only_the_given_members_are_planned() {
    // A poll of one measurement plans only that measurement's registers.
    let regs = vec![holding(0), holding(1), holding(2), holding(50)];
    assert_eq!(
        plan(&regs, &[3, 0], &LIMITS),
        vec![
            block(Table::Holding, 0, 1, &[0]),
            block(Table::Holding, 50, 1, &[3]),
        ]
    );
    assert_eq!(plan(&regs, &[], &LIMITS), vec![]);
}

#[test]
fn a_value_at_the_end_of_the_address_space() {
    let regs = vec![
        at(Table::Holding, 65532, DataType::Float64), // 65532..=65535
        holding(65530),
    ];
    assert_eq!(
        plan(&regs, &all(&regs), &LIMITS),
        vec![block(Table::Holding, 65530, 6, &[1, 0])]
    );
}

/// The fewest blocks for single registers at `addresses` (sorted, distinct), by dynamic
/// programming over where each block starts: the reference the greedy plan must match.
fn fewest_blocks(addresses: &[u16], limits: &DeviceLimits) -> usize {
    let n = addresses.len();
    let mut best = vec![usize::MAX; n + 1];
    best[0] = 0;
    for end in 1..=n {
        for start in (0..end).rev() {
            let span = u32::from(addresses[end - 1]) - u32::from(addresses[start]) + 1;
            let gaps_ok = addresses[start..end]
                .windows(2)
                .all(|w| u32::from(w[1]) - u32::from(w[0]) - 1 <= u32::from(limits.max_gap));
            if span > u32::from(limits.max_registers) || !gaps_ok {
                break;
            }
            if best[start] != usize::MAX {
                best[end] = best[end].min(best[start] + 1);
            }
        }
    }
    best[n]
}

#[test]
fn plan_is_minimal_and_valid_for_random_register_sets() {
    let mut rng = fastrand::Rng::with_seed(0x5EED);
    for _ in 0..500 {
        let limits = DeviceLimits {
            max_registers: rng.u16(1..=20),
            max_bits: 2000,
            max_gap: rng.u16(0..=6),
        };
        let mut addresses: Vec<u16> = (0..rng.usize(1..=30)).map(|_| rng.u16(0..80)).collect();
        addresses.sort_unstable();
        addresses.dedup();
        let mut regs: Vec<Register> = addresses.iter().map(|&a| holding(a)).collect();
        rng.shuffle(&mut regs);
        let blocks = plan(&regs, &all(&regs), &limits);

        assert_eq!(
            blocks.len(),
            fewest_blocks(&addresses, &limits),
            "{addresses:?} {limits:?}"
        );
        // Every register is in exactly one block, inside it, and no block breaks a limit.
        let mut seen = vec![0; regs.len()];
        for b in &blocks {
            assert!(b.quantity <= limits.max_registers, "{b:?}");
            let mut inside: Vec<u16> = b.members.iter().map(|&i| regs[i].address).collect();
            inside.sort_unstable();
            assert_eq!(inside.first(), Some(&b.address), "{b:?}");
            assert_eq!(
                u32::from(*inside.last().unwrap()) + 1,
                u32::from(b.address) + u32::from(b.quantity),
                "{b:?}"
            );
            for w in inside.windows(2) {
                assert!(w[1] - w[0] - 1 <= limits.max_gap, "{b:?}");
            }
            for &i in &b.members {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }
}

// =============================================================================================
// split: refused blocks
// =============================================================================================

#[test]
fn split_goes_from_bridged_block_to_runs_to_single_registers() {
    // Registers 0, 1, 2 and 5, 6: one block 0..7 that bridges the unused 3 and 4.
    let regs = vec![holding(0), holding(1), holding(2), holding(5), holding(6)];
    let blocks = plan(&regs, &all(&regs), &LIMITS);
    assert_eq!(blocks, vec![block(Table::Holding, 0, 7, &[0, 1, 2, 3, 4])]);

    // A device that refuses the block (exception 02) may not have registers 3 and 4: read
    // only the runs actually configured.
    let runs = split(&regs, &blocks[0], &LIMITS).unwrap();
    assert_eq!(
        runs,
        vec![
            block(Table::Holding, 0, 3, &[0, 1, 2]),
            block(Table::Holding, 5, 2, &[3, 4]),
        ]
    );

    // A refused run without a gap: one of its registers is missing, so read each alone.
    let singles = split(&regs, &runs[0], &LIMITS).unwrap();
    assert_eq!(
        singles,
        vec![
            block(Table::Holding, 0, 1, &[0]),
            block(Table::Holding, 1, 1, &[1]),
            block(Table::Holding, 2, 1, &[2]),
        ]
    );

    // A refused single register cannot be split: that register is unreadable.
    assert_eq!(split(&regs, &singles[1], &LIMITS), None);
}

#[test]
fn split_keeps_each_value_whole() {
    let regs = vec![
        at(Table::Input, 10, DataType::Float32),
        at(Table::Input, 12, DataType::UInt16),
    ];
    let blocks = plan(&regs, &all(&regs), &LIMITS);
    assert_eq!(blocks, vec![block(Table::Input, 10, 3, &[0, 1])]);
    assert_eq!(
        split(&regs, &blocks[0], &LIMITS),
        Some(vec![
            block(Table::Input, 10, 2, &[0]),
            block(Table::Input, 12, 1, &[1]),
        ])
    );
}

#[test]
fn split_of_a_coil_block() {
    let regs = vec![coil(0), coil(1), coil(8)];
    let blocks = plan(&regs, &all(&regs), &LIMITS);
    assert_eq!(blocks, vec![block(Table::Coil, 0, 9, &[0, 1, 2])]);
    let runs = split(&regs, &blocks[0], &LIMITS).unwrap();
    assert_eq!(
        runs,
        vec![
            block(Table::Coil, 0, 2, &[0, 1]),
            block(Table::Coil, 8, 1, &[2]),
        ]
    );
    assert_eq!(split(&regs, &runs[1], &LIMITS), None);
}

#[test]
fn split_of_registers_sharing_an_address() {
    // Two bits of one word in one block: there is no run to separate, so each bit is read
    // alone, and each of those blocks is final.
    let regs = vec![
        at(Table::Holding, 5, DataType::Bit(0)),
        at(Table::Holding, 5, DataType::Bit(1)),
    ];
    let blocks = plan(&regs, &all(&regs), &LIMITS);
    let singles = split(&regs, &blocks[0], &LIMITS).unwrap();
    assert_eq!(
        singles,
        vec![
            block(Table::Holding, 5, 1, &[0]),
            block(Table::Holding, 5, 1, &[1]),
        ]
    );
    assert_eq!(split(&regs, &singles[0], &LIMITS), None);
}
