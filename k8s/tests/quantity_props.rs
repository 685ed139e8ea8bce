//! Property tests of the quantity parser: no input panics, every error stays a line long
//! whatever the input's length, and a sign in front behaves as the API server's does (`+`
//! changes nothing, `-` leaves only zero usable).
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubesched_k8s::quantity::{MAX_LEN, Quantity, QuantityError};
use proptest::prelude::*;

/// The longest error message: the longest variant text, a quote of at most 32 characters
/// (each escaped to at most 10 bytes by Debug), and the noted length.
const MAX_MESSAGE: usize = 400;

/// Unsigned strings shaped like quantities, so the parser's deeper paths (exponents, binary
/// suffixes, rounding, the range checks) are reached often.
const UNSIGNED_QUANTITY_LIKE: &str =
    "[0-9]{0,25}(\\.[0-9]{0,25})?([numkMGTPE]|[KMGTPE]i|[eE][-+]?[0-9]{1,11})?";

/// The same with a sign, sometimes.
fn quantity_like() -> impl Strategy<Value = String> {
    ("[-+]?", UNSIGNED_QUANTITY_LIKE).prop_map(|(sign, rest)| sign + &rest)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_text_never_panics_and_errors_stay_short(text in "\\PC{0,80}") {
        if let Err(error) = Quantity::parse(&text) {
            let message = error.to_string();
            prop_assert!(message.len() <= MAX_MESSAGE, "{} bytes: {}", message.len(), message);
        }
    }

    #[test]
    fn any_chars_at_all_never_panic(text in ".{0,80}") {
        if let Err(error) = Quantity::parse(&text) {
            prop_assert!(error.to_string().len() <= MAX_MESSAGE);
        }
    }

    #[test]
    fn quantity_like_text_never_panics(text in quantity_like()) {
        if let Err(error) = Quantity::parse(&text) {
            prop_assert!(error.to_string().len() <= MAX_MESSAGE);
        }
    }

    #[test]
    fn a_sign_behaves_as_the_api_servers(unsigned in UNSIGNED_QUANTITY_LIKE) {
        prop_assume!(unsigned.len() < MAX_LEN);
        if let Ok(value) = Quantity::parse(&unsigned) {
            prop_assert_eq!(Quantity::parse(&format!("+{unsigned}")), Ok(value));
            let negated = Quantity::parse(&format!("-{unsigned}"));
            if value == Quantity::default() {
                prop_assert_eq!(negated, Ok(value));
            } else {
                prop_assert!(matches!(negated, Err(QuantityError::Negative(_))), "{negated:?}");
            }
        }
    }

    #[test]
    fn long_inputs_are_refused_with_a_short_message(text in "[0-9a-zé ]{65,400}") {
        let error = Quantity::parse(&text).unwrap_err();
        prop_assert!(matches!(error, QuantityError::TooLarge(_)));
        prop_assert!(error.to_string().len() <= MAX_MESSAGE);
    }
}
