//! The event-push XML parser on arbitrary bytes: it must never panic, never
//! expand anything (no value is longer than the document), accept only
//! characters XML allows, and whatever it reads must survive a round trip
//! through our own reply writer unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/providers/wechat/events.rs"]
#[allow(dead_code)]
mod events;

fuzz_target!(|data: &[u8]| {
    let Ok(push) = events::parse(data) else {
        return;
    };
    for value in [
        &push.to_user_name,
        &push.from_user_name,
        &push.msg_type,
        &push.event,
        &push.event_key,
        &push.ticket,
        &push.encrypt,
    ]
    .into_iter()
    .flatten()
    {
        assert!(value.len() <= data.len(), "a value grew: entity expansion");
        assert!(
            value.chars().all(allowed_by_xml_1_0),
            "a forbidden character was accepted"
        );
    }
    if let Some(from) = &push.from_user_name {
        let reply = events::text_reply(from, "gh_x", push.create_time.unwrap_or(0), "ok]]>");
        let again = events::parse(reply.as_bytes()).expect("our own reply parses");
        assert_eq!(again.to_user_name.as_deref(), Some(from.as_str()));
        assert_eq!(again.create_time, Some(push.create_time.unwrap_or(0)));
    }
    let _ = push.scene();
    let _ = push.dedup_key();
});

/// XML 1.0 (fifth edition) section 2.2, production [2] `Char`: the oracle's
/// own reading of the specification, not the parser's `is_xml_char`.
fn allowed_by_xml_1_0(c: char) -> bool {
    let c = u32::from(c);
    matches!(c, 0x9 | 0xA | 0xD)
        || (0x20..=0xD7FF).contains(&c)
        || (0xE000..=0xFFFD).contains(&c)
        || (0x10000..=0x10FFFF).contains(&c)
}
