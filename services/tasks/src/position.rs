//! Fractional position keys (spec Rule 5): strings of base-62 digits compared bytewise
//! (`COLLATE "C"`), so an item can be placed between two others without renumbering.
//!
//! A key starts with an integer part: a head letter that encodes how many digits follow
//! (`a` = 1 digit, `b` = 2, ... for positive integers; `Z` = 1, `Y` = 2, ... for negative ones,
//! which sort first), then those digits. Moves later append a fractional part to place a key
//! between two neighbours. Appending at the end of a column increments the integer part, so a
//! column of n tasks uses keys of about log62(n) + 1 characters.

/// The digits, in byte order.
const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The key of the first item of an empty list.
pub const FIRST: &str = "a0";

/// A key after `last` (the greatest key of the list), or [`FIRST`] for an empty list.
pub fn after(last: Option<&str>) -> String {
    let Some(last) = last else {
        return FIRST.to_string();
    };
    integer_part(last).and_then(increment).unwrap_or_else(|| {
        // Not in this format (or the largest integer): extending a key always sorts after it.
        format!("{last}V")
    })
}

/// `count` keys in ascending order, for seeding a list (the default board columns).
pub fn sequence(count: usize) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(count);
    for _ in 0..count {
        let next = after(keys.last().map(String::as_str));
        keys.push(next);
    }
    keys
}

fn digit_value(d: u8) -> Option<usize> {
    DIGITS.iter().position(|&x| x == d)
}

/// The integer part of `key` (head and digits), if the key is well formed.
fn integer_part(key: &str) -> Option<&str> {
    let head = *key.as_bytes().first()?;
    let digits = match head {
        b'a'..=b'z' => usize::from(head - b'a') + 1,
        b'A'..=b'Z' => usize::from(b'Z' - head) + 1,
        _ => return None,
    };
    let part = key.get(..=digits)?;
    part.bytes().skip(1).all(|d| digit_value(d).is_some()).then_some(part)
}

/// The next integer: `a0` → `a1`, `az` → `b00`, `Zz` → `a0`, `Yzz` → `Z0`.
fn increment(int: &str) -> Option<String> {
    let bytes = int.as_bytes();
    let head = bytes[0];
    let mut digits = bytes[1..].to_vec();
    for i in (0..digits.len()).rev() {
        let v = digit_value(digits[i])?;
        if v + 1 < DIGITS.len() {
            digits[i] = DIGITS[v + 1];
            return String::from_utf8([&[head][..], &digits].concat()).ok();
        }
        digits[i] = DIGITS[0];
    }
    // Every digit carried: the next integer needs another head.
    match head {
        b'z' => None,
        b'Z' => Some(FIRST.to_string()),
        b'a'..=b'y' => String::from_utf8([&[head + 1][..], &vec![b'0'; digits.len() + 1]].concat()).ok(),
        _ => String::from_utf8([&[head + 1][..], &vec![b'0'; digits.len() - 1]].concat()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers_increment_with_carry() {
        assert_eq!(after(None), "a0");
        assert_eq!(after(Some("a0")), "a1");
        assert_eq!(after(Some("a9")), "aA");
        assert_eq!(after(Some("az")), "b00");
        assert_eq!(after(Some("b0z")), "b10");
        assert_eq!(after(Some("Zz")), "a0");
        assert_eq!(after(Some("Yzz")), "Z0");
        assert_eq!(sequence(3), ["a0", "a1", "a2"]);
    }

    #[test]
    fn fractional_or_foreign_keys_are_still_followed() {
        // A fractional part is dropped: the next integer is greater than any key it prefixes.
        assert_eq!(after(Some("a0V")), "a1");
        assert!(after(Some("!?")).as_str() > "!?");
        assert!(after(Some("b0")).as_str() > "b0", "a truncated integer part");
    }

    proptest! {
        #[test]
        fn appending_keeps_strict_bytewise_order_and_short_keys(n in 1usize..5000) {
            let keys = sequence(n);
            for pair in keys.windows(2) {
                prop_assert!(pair[0].as_bytes() < pair[1].as_bytes(), "{} !< {}", pair[0], pair[1]);
            }
            prop_assert!(keys.iter().all(|k| k.len() <= 4 && k.bytes().all(|b| b.is_ascii_alphanumeric())));
        }

        #[test]
        fn after_any_key_sorts_after_it(key in "[0-9A-Za-z]{1,12}") {
            let next = after(Some(&key));
            prop_assert!(next.as_bytes() > key.as_bytes());
            prop_assert!(next.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
}
