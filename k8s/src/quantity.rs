//! Kubernetes resource quantities (`500m`, `1.5`, `64Gi`, `1e3`) parsed
//! exactly, without floating point and without panics on any input. The one
//! parser of both the extender and the node agent, so the two read the same
//! string the same way.
//!
//! The grammar is the API server's (k8s.io/apimachinery
//! `pkg/api/resource/quantity.go`, `ParseQuantity`):
//!
//! ```text
//! quantity ::= [sign] number suffix
//! sign     ::= "+" | "-"
//! number   ::= digits | digits "." digits | digits "." | "." digits
//! suffix   ::= "" | n | u | m | k | M | G | T | P | E          (decimal SI)
//!            | Ki | Mi | Gi | Ti | Pi | Ei                     (binary SI)
//!            | ("e" | "E") [sign] digits                       (decimal exponent)
//! ```
//!
//! No whitespace anywhere (`ParseQuantity` refuses it; only its JSON decoder
//! trims). A value finer than a nano-unit rounds up to one (`0.5n` is `1n`),
//! and a binary-SI value above 2^63-1 is capped there, as the API server
//! does. Where we are stricter, on purpose:
//!
//! - a negative value is [`QuantityError::Negative`] (`-0`, `-0.0m` are zero);
//! - a number without digits (`.`, `+`, `-.`) is invalid, as the grammar says
//!   (the API server's scanner lets some through as zero);
//! - more than [`MAX_LEN`] bytes, an exponent outside `i32` (the API server
//!   truncates it to 32 bits), or a value above `u128` nano-units is
//!   [`QuantityError::TooLarge`]. Quantities the API server serves are
//!   canonical and far shorter.
//!
//! Values are held in nano-units (10^-9) in a `u128`: enough for every real
//! quantity (an exbibyte is ~1.2e27 nano-bytes) while keeping `0.1` exact.
//! Errors quote at most the first [`QUOTE_MAX_CHARS`](kubesched_core::text::QUOTE_MAX_CHARS) characters of the input.

use std::fmt;

use thiserror::Error;

use kubesched_core::text::quote;

/// Why a string is not a usable quantity. Each holds the input as quoted by
/// the parser: at most its first [`QUOTE_MAX_CHARS`](kubesched_core::text::QUOTE_MAX_CHARS) characters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// Not in the API server's grammar: no digits, an unknown suffix, whitespace or stray
    /// characters.
    #[error("invalid quantity {0}")]
    Invalid(String),
    /// A negative value; `-0` and the like are zero and allowed.
    #[error("quantity {0} is negative")]
    Negative(String),
    /// Too long (over [`MAX_LEN`] bytes), an exponent outside `i32`, or a value beyond `u128`
    /// nano-units.
    #[error("quantity {0} is out of range")]
    TooLarge(String),
}

/// The longest input parsed, in bytes.
pub const MAX_LEN: usize = 64;

const NANO: u128 = 1_000_000_000;

/// Where the API server caps a binary-SI quantity: 2^63-1, in nano-units.
const BINARY_CAP: u128 = (i64::MAX as u128) * NANO;

/// A non-negative quantity in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity(u128);

impl Quantity {
    /// Reads `text` by the API server's grammar (see the module header).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let invalid = || QuantityError::Invalid(quote(text));
        let out_of_range = || QuantityError::TooLarge(quote(text));
        if text.len() > MAX_LEN {
            return Err(out_of_range());
        }
        let (negative, rest) = match text.as_bytes() {
            [b'-', rest @ ..] => (true, rest),
            [b'+', rest @ ..] => (false, rest),
            rest => (false, rest),
        };
        let (int_digits, rest) = split_digits(rest);
        let (frac_digits, suffix) = match rest {
            [b'.', after @ ..] => split_digits(after),
            _ => (&[][..], rest),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        // The value is mantissa * 10^exp10 * 2^shift.
        let (exp10, shift): (i64, u32) = match suffix {
            b"" => (0, 0),
            b"n" => (-9, 0),
            b"u" => (-6, 0),
            b"m" => (-3, 0),
            b"k" => (3, 0),
            b"M" => (6, 0),
            b"G" => (9, 0),
            b"T" => (12, 0),
            b"P" => (15, 0),
            b"E" => (18, 0),
            b"Ki" => (0, 10),
            b"Mi" => (0, 20),
            b"Gi" => (0, 30),
            b"Ti" => (0, 40),
            b"Pi" => (0, 50),
            b"Ei" => (0, 60),
            [b'e' | b'E', exponent @ ..] => (parse_exponent(exponent).ok_or_else(invalid)?, 0),
            _ => return Err(invalid()),
        };
        let digits = [int_digits, frac_digits].concat();
        let leading_zeros = digits.iter().take_while(|&&d| d == b'0').count();
        let mantissa = &digits[leading_zeros..];
        if mantissa.is_empty() {
            return Ok(Quantity(0));
        }
        if negative {
            return Err(QuantityError::Negative(quote(text)));
        }
        if i32::try_from(exp10).is_err() {
            return Err(out_of_range());
        }
        // The decimal point's place counted in nano-units: the mantissa's
        // digits times 10^point.
        let frac_len = i64::try_from(frac_digits.len()).map_err(|_| out_of_range())?;
        let point = exp10 + 9 - frac_len;
        if shift == 0 {
            return scaled_ceil(mantissa, point)
                .map(Quantity)
                .ok_or_else(out_of_range);
        }
        let value = scaled_ceil(&times_pow2(mantissa, shift), point).unwrap_or(u128::MAX);
        Ok(Quantity(value.min(BINARY_CAP)))
    }

    /// In thousandths, rounded up (CPU millicores).
    pub fn milli_ceil(self) -> u64 {
        saturate(self.0.div_ceil(1_000_000))
    }

    /// In mebibytes, rounded up (memory).
    pub fn mebi_ceil(self) -> u64 {
        saturate(self.0.div_ceil(NANO << 20))
    }

    /// As a whole number, or `None` when it has a fractional part.
    pub fn whole(self) -> Option<u64> {
        self.0.is_multiple_of(NANO).then(|| saturate(self.0 / NANO))
    }

    /// The sum of both, capped at the largest quantity rather than overflowing.
    pub fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Quantity {
    /// Decimal form without trailing zeros (`1.5`, `2`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / NANO, self.0 % NANO);
        if frac == 0 {
            write!(f, "{int}")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// The leading ASCII digits of `bytes`, and the rest.
fn split_digits(bytes: &[u8]) -> (&[u8], &[u8]) {
    let n = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    bytes.split_at(n)
}

/// The exponent of `e<exponent>`: an optional sign and at least one digit,
/// within `i64` as the API server reads it (`strconv.ParseInt(.., 10, 64)`).
fn parse_exponent(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits.iter().try_fold(0i128, |acc, &d| {
        acc.checked_mul(10)?.checked_add(i128::from(d - b'0'))
    })?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// `digits` (ASCII, most significant first) times 2^shift, exactly; `shift`
/// is at most 60.
fn times_pow2(digits: &[u8], shift: u32) -> Vec<u8> {
    let factor = 1u128 << shift;
    let mut out = Vec::with_capacity(digits.len() + 19);
    let mut carry = 0u128;
    for &d in digits.iter().rev() {
        let v = u128::from(d - b'0') * factor + carry;
        out.push(b'0' + (v % 10) as u8);
        carry = v / 10;
    }
    while carry > 0 {
        out.push(b'0' + (carry % 10) as u8);
        carry /= 10;
    }
    let significant = out.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
    out.truncate(significant);
    out.reverse();
    out
}

/// `digits` (ASCII, no leading zero, not zero) times 10^point, rounded up to
/// a whole number; `None` when that exceeds `u128`.
fn scaled_ceil(digits: &[u8], point: i64) -> Option<u128> {
    let len = i64::try_from(digits.len()).ok()?;
    if point >= 0 {
        // At least 10^(len - 1 + point): past u128 (~3.4e38) from 10^39 on.
        if len + point > 39 {
            return None;
        }
        let power = 10u128.checked_pow(u32::try_from(point).ok()?)?;
        return to_u128(digits)?.checked_mul(power);
    }
    let int_len = usize::try_from(len + point).unwrap_or(0);
    let (int, frac) = digits.split_at(int_len.min(digits.len()));
    let round_up = u128::from(frac.iter().any(|&d| d != b'0'));
    to_u128(int)?.checked_add(round_up)
}

/// ASCII digits as a `u128` (empty is zero); `None` on overflow.
fn to_u128(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u128::from(d - b'0'))
    })
}

fn saturate(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    const UNIT: u128 = NANO;

    /// Strings the API server's `ParseQuantity` accepts, with their value in
    /// nano-units: from apimachinery's `quantity_test.go` (`TestQuantityParse`,
    /// `TestQuantityParseEmit`, their `+` and `-` variants of every valid
    /// string) and the grammar in `quantity.go`.
    const ACCEPTED: &[(&str, u128)] = &[
        ("0", 0),
        ("0n", 0),
        ("0u", 0),
        ("0m", 0),
        ("0Ki", 0),
        ("0k", 0),
        ("0Mi", 0),
        ("0M", 0),
        ("0Gi", 0),
        ("0G", 0),
        ("0Ti", 0),
        ("0T", 0),
        ("1", UNIT),
        ("+1", UNIT),
        ("-0", 0),
        ("+0", 0),
        ("-0.0", 0),
        ("-0m", 0),
        ("-0Ki", 0),
        ("-0e5", 0),
        ("000", 0),
        ("0e9999999999", 0),
        // Binary suffixes.
        ("1Ki", 1024 * UNIT),
        ("8Ki", 8 * 1024 * UNIT),
        ("7Mi", (7 << 20) * UNIT),
        ("6Gi", (6 << 30) * UNIT),
        ("5Ti", (5 << 40) * UNIT),
        ("4Pi", (4 << 50) * UNIT),
        ("3Ei", (3 << 60) * UNIT),
        ("100Ti", (100 << 40) * UNIT),
        ("1.5Gi", (3 << 29) * UNIT),
        ("+1.5Gi", (3 << 29) * UNIT),
        // Decimal suffixes.
        ("5n", 5),
        ("4u", 4_000),
        ("3m", 3_000_000),
        ("500m", 500_000_000),
        ("2000m", 2 * UNIT),
        ("9", 9 * UNIT),
        ("8k", 8_000 * UNIT),
        ("50k", 50_000 * UNIT),
        ("7M", 7_000_000 * UNIT),
        ("6G", 6_000_000_000 * UNIT),
        ("5T", 5_000_000_000_000 * UNIT),
        ("40T", 40_000_000_000_000 * UNIT),
        ("2P", 2_000_000_000_000_000 * UNIT),
        ("1E", 1_000_000_000_000_000_000 * UNIT),
        ("12E", 12_000_000_000_000_000_000 * UNIT),
        // Decimal exponents.
        ("1E-3", 1_000_000),
        ("1e3", 1_000 * UNIT),
        ("1E6", 1_000_000 * UNIT),
        ("1e9", 1_000_000_000 * UNIT),
        ("1E18", 1_000_000_000_000_000_000 * UNIT),
        ("1e0", UNIT),
        ("1e+3", 1_000 * UNIT),
        ("1e-3", 1_000_000),
        ("1e003", 1_000 * UNIT),
        ("100.035k", 100_035 * UNIT),
        // Things that look like floating point.
        ("0.001", 1_000_000),
        ("0.0005k", 500_000_000),
        ("0.5", 500_000_000),
        ("0.00050k", 500_000_000),
        ("0.50000", 500_000_000),
        ("0.5e0", 500_000_000),
        ("0.5e-1", 50_000_000),
        ("0.5e-2", 5_000_000),
        ("10.035M", 10_035_000 * UNIT),
        ("1.2e3", 1_200 * UNIT),
        ("1.3E+6", 1_300_000 * UNIT),
        ("1.40e9", 1_400_000_000 * UNIT),
        ("1.7E18", 1_700_000_000_000_000_000 * UNIT),
        ("9.01", 9_010_000_000),
        ("8.1k", 8_100 * UNIT),
        ("7.123456M", 7_123_456 * UNIT),
        ("6.987654321G", 6_987_654_321 * UNIT),
        ("2.5P", 2_500_000_000_000_000 * UNIT),
        ("1.01E", 1_010_000_000_000_000_000 * UNIT),
        // Things that round up to a nano-unit, and the binary cap.
        ("3.001n", 4),
        ("1.1E-9", 2),
        ("0.0000000001", 1),
        ("0.00000000050", 1),
        ("0.5e-9", 1),
        ("0.9n", 1),
        ("0.00000012345", 124),
        ("0.00000012354", 124),
        ("1e-99", 1),
        ("9Ei", BINARY_CAP),
        ("9223372036854775807Ki", BINARY_CAP),
        ("8Ei", BINARY_CAP),
        // Fractional binary quantities.
        ("100.035Ki", 102_435_840_000_000),
        ("0.5Mi", 524_288 * UNIT),
        ("0.05Gi", 53_687_091_200_000_000),
        ("0.025Ti", 27_487_790_694_400_000_000),
        ("0.000000000001Ki", 2),
        (".001Ki", 1_024_000_000),
        (".000001Ki", 1_024_000),
        (".000000001Ki", 1_024),
        ("1.0000000001Ki", 1_024_000_000_103),
        // Written by trolls, still valid.
        (".001", 1_000_000),
        (".0001k", 100_000_000),
        ("1.", UNIT),
        ("1.G", 1_000_000_000 * UNIT),
        ("+.5", 500_000_000),
    ];

    #[test]
    fn accepts_what_the_api_server_accepts_with_its_value() {
        for &(text, nanos) in ACCEPTED {
            assert_eq!(Quantity::parse(text), Ok(Quantity(nanos)), "{text:?}");
        }
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        let invalid = [
            // apimachinery quantity_test.go, `invalid` and the empty string.
            "",
            "1.1.M",
            "1+1.0M",
            "0.1mi",
            "0.1am",
            "aoeu",
            ".5i",
            "1i",
            "-3.01i",
            "-3.01e-",
            " 1",
            "1 ",
            // Whitespace anywhere, other malformed forms.
            " 1 ",
            "1\t",
            "1 Gi",
            "1.2.3",
            "1Gb",
            "1K",
            "1ki",
            "1e",
            "1e+",
            "1E-",
            "1Ee3",
            "1e3Ki",
            "1.5e3.5",
            "--1",
            "+-1",
            "-+1",
            "1_000",
            "0x10",
            "1,5",
            "NaN",
            "٣",
            "１",
            // The exponent is past i64: strconv.ParseInt refuses it.
            "1e9223372036854775808",
            "1e99999999999999999999999999999999999999999",
            // No digits: outside the grammar (see the module header).
            ".",
            "+",
            "-",
            "-.",
            "+.",
            ".e3",
            "Ki",
        ];
        for text in invalid {
            assert_eq!(
                Quantity::parse(text),
                Err(QuantityError::Invalid(quote(text))),
                "{text:?}"
            );
        }
        for text in ["-1", "-1.025Ti", "-0.5", "-1n", "-0.0000000001", "-1e-99"] {
            assert_eq!(
                Quantity::parse(text),
                Err(QuantityError::Negative(quote(text))),
                "{text:?}"
            );
        }
        for text in [
            "1e39",
            "1e2147483648",
            "1e-2147483649",
            "340282366920938463463374607431768211455",
            "1".repeat(MAX_LEN + 1).as_str(),
            "0".repeat(MAX_LEN + 1).as_str(),
        ] {
            assert_eq!(
                Quantity::parse(text),
                Err(QuantityError::TooLarge(quote(text))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(q("500m").milli_ceil(), 500);
        assert_eq!(q("2").milli_ceil(), 2000);
        assert_eq!(q("0.1").milli_ceil(), 100);
        assert_eq!(q("1.5").milli_ceil(), 1500);
        assert_eq!(q("1e3").milli_ceil(), 1_000_000);
        assert_eq!(q("100u").milli_ceil(), 1, "sub-milli rounds up");
        assert_eq!(q("0.0000000001").milli_ceil(), 1);
        assert_eq!(q("+3").whole(), Some(3));
        assert_eq!(q("-0").whole(), Some(0));
    }

    #[test]
    fn memory_forms() {
        assert_eq!(q("64Gi").mebi_ceil(), 65536);
        assert_eq!(q("512Mi").mebi_ceil(), 512);
        assert_eq!(q("1G").mebi_ceil(), 954);
        assert_eq!(q("1048576").mebi_ceil(), 1);
        assert_eq!(q("1Ki").mebi_ceil(), 1);
        assert_eq!(q("1Pi").mebi_ceil(), 1 << 30);
    }

    #[test]
    fn whole_counts_only() {
        assert_eq!(q("2").whole(), Some(2));
        assert_eq!(q("1e0").whole(), Some(1));
        assert_eq!(q("1k").whole(), Some(1000));
        assert_eq!(q("1500m").whole(), None);
        assert_eq!(q("2000m").whole(), Some(2));
        assert_eq!(q("1e-99").whole(), None);
        assert_eq!(q("1500m").to_string(), "1.5");
        assert_eq!(q("3").to_string(), "3");
    }

    #[test]
    fn errors_quote_a_short_prefix() {
        let long = "7".repeat(1 << 20);
        let message = Quantity::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 140, "{message}");
        let shown = kubesched_core::text::QUOTE_MAX_CHARS;
        assert!(message.contains(&"7".repeat(shown)));
        assert!(!message.contains(&"7".repeat(shown + 1)));
        assert!(message.contains("(1048576 bytes)"));
        // Cut on a character boundary, never inside one.
        let wide = "é".repeat(100);
        let message = Quantity::parse(&wide).unwrap_err().to_string();
        assert!(message.contains("... (200 bytes)"), "{message}");
        assert_eq!(
            Quantity::parse("1Gb").unwrap_err().to_string(),
            "invalid quantity \"1Gb\""
        );
    }
}
