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

/// Longest key the server keeps; a longer one makes it re-key the column (Rule 5).
pub const MAX_LEN: usize = 50;

/// A key strictly between `lo` and `hi` (bytewise), where `None` is the open end of the list.
/// `None` when no such key exists (`lo >= hi`, `hi` is `lo` followed by zero digits, or a key
/// holds a character outside the alphabet): the caller then re-keys the list.
pub fn between(lo: Option<&str>, hi: Option<&str>) -> Option<String> {
    let a = digits_of(lo.unwrap_or(""))?;
    let b = match hi {
        Some(hi) => Some(digits_of(hi)?),
        None => None,
    };
    let mid = midpoint(&a, b.as_deref())?;
    String::from_utf8(mid.into_iter().map(|d| DIGITS[usize::from(d)]).collect()).ok()
}

fn digits_of(key: &str) -> Option<Vec<u8>> {
    key.bytes().map(|b| digit_value(b).and_then(|v| u8::try_from(v).ok())).collect()
}

/// Digit strings: a value strictly between `a` (missing digits count as 0) and `b` (`None` =
/// past every key) that never ends in the zero digit, so there is always room below it.
fn midpoint(a: &[u8], b: Option<&[u8]>) -> Option<Vec<u8>> {
    if let Some(b) = b {
        let mut n = 0;
        while n < b.len() && a.get(n).copied().unwrap_or(0) == b[n] {
            n += 1;
        }
        if n == b.len() {
            // `b` equals `a` padded with zeros (or is a prefix of it): nothing lies between.
            return None;
        }
        if n > 0 {
            let rest = midpoint(a.get(n..).unwrap_or(&[]), Some(&b[n..]))?;
            return Some([&b[..n], rest.as_slice()].concat());
        }
    }
    let da = a.first().copied().unwrap_or(0);
    let db = b.map_or(DIGITS.len() as u8, |b| b[0]);
    if da >= db {
        return None;
    }
    if db - da > 1 {
        return Some(vec![da + (db - da) / 2]);
    }
    if let Some(b) = b.filter(|b| b.len() > 1) {
        return Some(vec![b[0]]);
    }
    let rest = midpoint(a.get(1..).unwrap_or(&[]), None)?;
    Some([&[da][..], rest.as_slice()].concat())
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

    #[test]
    fn between_finds_a_key_strictly_inside() {
        assert_eq!(between(Some("a0"), Some("a1")).as_deref(), Some("a0V"));
        let k = between(None, Some("a0")).unwrap_or_default();
        assert!(k.as_str() < "a0" && !k.is_empty());
        let k = between(Some("a0"), None).unwrap_or_default();
        assert!(k.as_str() > "a0");
        assert_eq!(between(Some("a1"), Some("a0")), None, "reversed bounds");
        assert_eq!(between(Some("a1"), Some("a1")), None, "equal bounds");
        assert_eq!(between(Some("a"), Some("a0")), None, "nothing between a key and its zero extension");
        assert_eq!(between(Some("a-"), None), None, "foreign characters");
    }

    /// Applies "move item `item` to index `to`" on an ordered list of (item, key) the way the
    /// server does: the new key between the neighbours, or an even re-key when there is none or
    /// it grows past MAX_LEN.
    fn apply_move(list: &mut Vec<(u32, String)>, item: u32, to: usize) {
        list.retain(|(i, _)| *i != item);
        let to = to.min(list.len());
        let lo = to.checked_sub(1).map(|i| list[i].1.clone());
        let hi = list.get(to).map(|(_, k)| k.clone());
        match between(lo.as_deref(), hi.as_deref()).filter(|k| k.len() <= MAX_LEN) {
            Some(key) => list.insert(to, (item, key)),
            None => {
                list.insert(to, (item, String::new()));
                let fresh_keys = sequence(list.len());
                for ((_, key), fresh) in list.iter_mut().zip(fresh_keys) {
                    *key = fresh;
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_sequence_of_moves_yields_exactly_the_requested_order(
            n in 1u32..30,
            moves in proptest::collection::vec((0u32..30, 0usize..31), 0..300),
        ) {
            let mut list: Vec<(u32, String)> = (0..n).zip(sequence(n as usize)).collect();
            let mut expected: Vec<u32> = (0..n).collect();
            for (item, to) in moves {
                let item = item % n;
                apply_move(&mut list, item, to);
                expected.retain(|i| *i != item);
                expected.insert(to.min(expected.len()), item);
                // The keys alone, sorted bytewise, give the requested order.
                let mut by_key = list.clone();
                by_key.sort_by(|x, y| x.1.as_bytes().cmp(y.1.as_bytes()));
                let order: Vec<u32> = by_key.iter().map(|(i, _)| *i).collect();
                prop_assert_eq!(&order, &expected);
                let distinct: std::collections::HashSet<&String> = list.iter().map(|(_, k)| k).collect();
                prop_assert_eq!(distinct.len(), list.len(), "keys are distinct");
                prop_assert!(list.iter().all(|(_, k)| k.len() <= MAX_LEN && !k.is_empty()));
            }
        }

        #[test]
        fn repeated_inserts_at_the_front_stay_ordered(count in 1usize..200) {
            let mut first = "a0".to_string();
            for _ in 0..count {
                let next = between(None, Some(&first));
                prop_assert!(next.is_some());
                let next = next.unwrap_or_default();
                prop_assert!(next.as_bytes() < first.as_bytes());
                first = next;
            }
        }
    }
}
