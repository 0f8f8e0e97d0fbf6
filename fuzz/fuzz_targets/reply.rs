//! A model reply (untrusted): output sanitizing never panics, and what it lets through has no
//! control characters, no markup tag (as the filter defines one) and stays within the cap.
#![no_main]

use coach_api::safety;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let clean = safety::clean_output(raw);
    assert!(clean.text.chars().count() <= safety::MAX_REPLY_CHARS + 1);
    assert!(!clean.text.chars().any(char::is_control));
    assert!(!safety::holds_markup(&clean.text), "markup survived: {:?}", clean.text);
});
