//! Kubernetes resource quantities (`500m`, `1.5`, `64Gi`, `1e3`) parsed
//! exactly, without floating point and without panics on any input.
//!
//! Values are held in nano-units (10^-9) in a `u128`: enough for every real
//! quantity (an exbibyte is ~1.2e27 nano-bytes) while keeping `0.1` exact.

use std::fmt;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    #[error("invalid quantity {0:?}")]
    Invalid(String),
    #[error("quantity {0:?} is negative")]
    Negative(String),
    #[error("quantity {0:?} is out of range")]
    TooLarge(String),
}

const NANO: u128 = 1_000_000_000;

/// A non-negative quantity in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity(u128);

impl Quantity {
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let invalid = || QuantityError::Invalid(text.to_string());
        let too_large = || QuantityError::TooLarge(text.to_string());
        let s = text.trim();
        let s = match s.strip_prefix('-') {
            Some(rest) if rest.bytes().any(|b| b.is_ascii_digit() && b != b'0') => {
                return Err(QuantityError::Negative(text.to_string()));
            }
            Some(rest) => rest,
            None => s.strip_prefix('+').unwrap_or(s),
        };
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(num_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
            return Err(invalid());
        }
        // (multiplier, divisor) applied to the nano-scaled number.
        let (mul, div): (u128, u128) = match suffix {
            "" => (1, 1),
            "n" => (1, NANO),
            "u" => (1, 1_000_000),
            "m" => (1, 1000),
            "k" => (1000, 1),
            "M" => (1_000_000, 1),
            "G" => (NANO, 1),
            "T" => (1_000_000_000_000, 1),
            "P" => (1_000_000_000_000_000, 1),
            "E" => (1_000_000_000_000_000_000, 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            "Ei" => (1 << 60, 1),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().map_err(|_| invalid())?;
                if !(-9..=18).contains(&exp) {
                    return Err(too_large());
                }
                if exp >= 0 {
                    (10u128.pow(exp as u32), 1)
                } else {
                    (1, 10u128.pow(exp.unsigned_abs()))
                }
            }
            _ => return Err(invalid()),
        };
        // Only the first 9 fractional digits matter at nano resolution; keep
        // any remainder as a round-up so `0.0000000001` is not zero.
        let kept = &frac_part[..frac_part.len().min(9)];
        let rest_nonzero = frac_part.len() > 9 && frac_part[9..].bytes().any(|b| b != b'0');
        let digits = |d: &str| -> Result<u128, QuantityError> {
            if d.len() > 30 {
                return Err(too_large());
            }
            if d.is_empty() {
                Ok(0)
            } else {
                d.parse::<u128>().map_err(|_| invalid())
            }
        };
        let int = digits(int_part)?;
        let frac = digits(kept)? * 10u128.pow(9 - kept.len() as u32) + u128::from(rest_nonzero);
        let nano = int
            .checked_mul(NANO)
            .and_then(|v| v.checked_add(frac))
            .and_then(|v| v.checked_mul(mul))
            .ok_or_else(too_large)?;
        Ok(Quantity(nano.div_ceil(div)))
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

fn saturate(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
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
        assert_eq!(q("1Ei").mebi_ceil(), 1 << 40);
    }

    #[test]
    fn whole_counts_only() {
        assert_eq!(q("2").whole(), Some(2));
        assert_eq!(q("1500m").whole(), None);
        assert_eq!(q("2000m").whole(), Some(2));
        assert_eq!(q("1500m").to_string(), "1.5");
        assert_eq!(q("3").to_string(), "3");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            "",
            "abc",
            "1.2.3",
            "1Zi",
            ".",
            "1e",
            "1e99",
            "5-",
            "٣",
            "1e-99",
            "9".repeat(60).as_str(),
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Quantity::parse("-1"),
            Err(QuantityError::Negative(_))
        ));
        assert!(matches!(
            Quantity::parse("99999999999999999999Ei"),
            Err(QuantityError::TooLarge(_))
        ));
    }
}
