//! The XML of WeChat's event push, pure: a strict, bounded parser for the
//! flat `<xml><Field>…</Field>…</xml>` documents WeChat sends, and the
//! passive replies we send back (plain text, and the safe-mode envelope).
//!
//! Hostile input is refused rather than interpreted: no DTDs, no entities
//! beyond XML's five predefined ones and character references (so nothing
//! expands), a depth limit, a size limit, and unclosed or mismatched tags
//! are errors. Only the root's direct children are read; anything deeper
//! (other message types carry nested lists) is checked and skipped.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Largest document we parse; the router refuses larger bodies too.
pub const MAX_XML: usize = 64 * 1024;
/// Deepest nesting accepted (`xml` is 1; WeChat's deepest lists reach 5).
pub const MAX_DEPTH: usize = 8;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the XML is larger than {MAX_XML} bytes")]
    TooLarge,
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("entity references other than the predefined ones are not accepted")]
    Entity,
    #[error("the XML is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the XML ends inside an element")]
    Unclosed,
    #[error("the root element must be <xml>")]
    NotWechat,
    #[error("<{0}> appears twice")]
    Duplicate(&'static str),
    #[error("<{0}> is not a number")]
    BadNumber(&'static str),
    #[error("a character XML does not allow")]
    BadChar,
    #[error("malformed XML")]
    Syntax,
}

/// One push as WeChat sends it: the fields we act on, each absent when the
/// document does not carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Push {
    /// Our account's original id (`gh_…`).
    pub to_user_name: Option<String>,
    /// The person's openid.
    pub from_user_name: Option<String>,
    /// Unix seconds.
    pub create_time: Option<u64>,
    /// `event`, `text`, …
    pub msg_type: Option<String>,
    /// `subscribe`, `SCAN`, …
    pub event: Option<String>,
    pub event_key: Option<String>,
    /// WeChat's QR ticket.
    pub ticket: Option<String>,
    /// Set on ordinary messages, not on events.
    pub msg_id: Option<u64>,
    /// The safe-mode envelope (base64).
    pub encrypt: Option<String>,
}

/// How a person reached us through a parametric QR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKind {
    /// Already following: `SCAN`, EventKey = scene.
    Scan,
    /// Followed by scanning: `subscribe`, EventKey = `qrscene_` + scene.
    Subscribe,
}

impl Push {
    /// The scene of a parametric-QR scan, if this push is one.
    pub fn scene(&self) -> Option<(&str, ScanKind)> {
        if !self
            .msg_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("event"))
        {
            return None;
        }
        let event = self.event.as_deref()?;
        let key = self.event_key.as_deref()?;
        let (scene, kind) = if event.eq_ignore_ascii_case("SCAN") {
            (key, ScanKind::Scan)
        } else if event.eq_ignore_ascii_case("subscribe") {
            (key.strip_prefix("qrscene_")?, ScanKind::Subscribe)
        } else {
            return None;
        };
        (!scene.is_empty()).then_some((scene, kind))
    }

    /// The key WeChat's retries of this push share: `MsgId` for messages,
    /// FromUserName + CreateTime + Event (+ EventKey, so two codes scanned
    /// in one second stay apart) for events.
    pub fn dedup_key(&self) -> Option<String> {
        if let Some(id) = self.msg_id {
            return Some(format!("msg:{id}"));
        }
        let from = self.from_user_name.as_deref()?;
        let time = self.create_time?;
        let event = self.event.as_deref().unwrap_or("");
        let key = self.event_key.as_deref().unwrap_or("");
        Some(format!("event:{from}:{time}:{event}:{key}"))
    }
}

#[derive(Clone, Copy)]
enum Field {
    ToUserName,
    FromUserName,
    CreateTime,
    MsgType,
    Event,
    EventKey,
    Ticket,
    MsgId,
    Encrypt,
}

impl Field {
    fn of(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"ToUserName" => Field::ToUserName,
            b"FromUserName" => Field::FromUserName,
            b"CreateTime" => Field::CreateTime,
            b"MsgType" => Field::MsgType,
            b"Event" => Field::Event,
            b"EventKey" => Field::EventKey,
            b"Ticket" => Field::Ticket,
            b"MsgId" => Field::MsgId,
            b"Encrypt" => Field::Encrypt,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::ToUserName => "ToUserName",
            Field::FromUserName => "FromUserName",
            Field::CreateTime => "CreateTime",
            Field::MsgType => "MsgType",
            Field::Event => "Event",
            Field::EventKey => "EventKey",
            Field::Ticket => "Ticket",
            Field::MsgId => "MsgId",
            Field::Encrypt => "Encrypt",
        }
    }
}

fn set_text(slot: &mut Option<String>, field: Field, value: String) -> Result<(), XmlError> {
    if slot.is_some() {
        return Err(XmlError::Duplicate(field.name()));
    }
    *slot = Some(value);
    Ok(())
}

fn set_number(slot: &mut Option<u64>, field: Field, value: &str) -> Result<(), XmlError> {
    if slot.is_some() {
        return Err(XmlError::Duplicate(field.name()));
    }
    let n = value
        .trim()
        .parse()
        .map_err(|_| XmlError::BadNumber(field.name()))?;
    *slot = Some(n);
    Ok(())
}

impl Push {
    fn set(&mut self, field: Field, value: String) -> Result<(), XmlError> {
        match field {
            Field::ToUserName => set_text(&mut self.to_user_name, field, value),
            Field::FromUserName => set_text(&mut self.from_user_name, field, value),
            Field::CreateTime => set_number(&mut self.create_time, field, &value),
            Field::MsgType => set_text(&mut self.msg_type, field, value),
            Field::Event => set_text(&mut self.event, field, value),
            Field::EventKey => set_text(&mut self.event_key, field, value),
            Field::Ticket => set_text(&mut self.ticket, field, value),
            Field::MsgId => set_number(&mut self.msg_id, field, &value),
            Field::Encrypt => set_text(&mut self.encrypt, field, value),
        }
    }
}

/// Parse a push, refusing anything hostile or not shaped like WeChat's XML.
pub fn parse(body: &[u8]) -> Result<Push, XmlError> {
    if body.len() > MAX_XML {
        return Err(XmlError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlError::Syntax)?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut push = Push::default();
    let mut depth = 0usize;
    let mut root_done = false;
    // The root child being read, and its text so far.
    let mut current: Option<(Option<Field>, String)> = None;
    loop {
        let event = reader.read_event().map_err(|_| XmlError::Syntax)?;
        match event {
            Event::Start(e) => {
                if root_done {
                    return Err(XmlError::Syntax);
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                match depth {
                    1 if e.name().as_ref() != b"xml" => return Err(XmlError::NotWechat),
                    2 => current = Some((Field::of(e.name().as_ref()), String::new())),
                    _ => {}
                }
            }
            Event::Empty(e) => match depth {
                _ if root_done => return Err(XmlError::Syntax),
                0 if e.name().as_ref() != b"xml" => return Err(XmlError::NotWechat),
                0 => root_done = true,
                1 => {
                    if let Some(field) = Field::of(e.name().as_ref()) {
                        push.set(field, String::new())?;
                    }
                }
                _ => {}
            },
            Event::End(_) => {
                if depth == 2 {
                    if let Some((Some(field), value)) = current.take() {
                        push.set(field, value)?;
                    }
                }
                depth = depth.checked_sub(1).ok_or(XmlError::Syntax)?;
                if depth == 0 {
                    root_done = true;
                }
            }
            Event::Text(t) => {
                let raw = t.decode().map_err(|_| XmlError::Syntax)?;
                append(&mut current, depth, &raw)?;
            }
            Event::CData(c) => {
                if depth == 0 {
                    return Err(XmlError::Syntax);
                }
                let raw = c.decode().map_err(|_| XmlError::Syntax)?;
                append(&mut current, depth, &raw)?;
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|_| XmlError::Syntax)?
                        .ok_or(XmlError::Syntax)?
                        .to_string()
                } else {
                    let name = r.decode().map_err(|_| XmlError::Syntax)?;
                    quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or(XmlError::Entity)?
                        .to_owned()
                };
                if depth == 0 {
                    return Err(XmlError::Syntax);
                }
                append(&mut current, depth, &resolved)?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                if depth != 0 {
                    return Err(XmlError::Unclosed);
                }
                if !root_done {
                    return Err(XmlError::Syntax);
                }
                return Ok(push);
            }
        }
    }
}

/// Add text to the field being read; text outside the root must be blank.
fn append(
    current: &mut Option<(Option<Field>, String)>,
    depth: usize,
    text: &str,
) -> Result<(), XmlError> {
    if !text.chars().all(is_xml_char) {
        return Err(XmlError::BadChar);
    }
    match (depth, current) {
        (0, _) if !text.trim().is_empty() => Err(XmlError::Syntax),
        (2, Some((_, value))) => {
            value.push_str(text);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether XML 1.0 allows `c` in a document (no NUL, no other C0
/// controls but tab and line ends, no U+FFFE/U+FFFF).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `text` as CDATA: a `]]>` inside is split across two sections, and
/// characters XML 1.0 forbids are dropped.
pub fn cdata(text: &str) -> String {
    let clean: String = text.chars().filter(|&c| is_xml_char(c)).collect();
    format!("<![CDATA[{}]]>", clean.replace("]]>", "]]]]><![CDATA[>"))
}

/// A passive text reply to `push_from` (the person) from `push_to` (us).
pub fn text_reply(to_user: &str, from_user: &str, create_time: u64, content: &str) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content>{}</Content></xml>",
        cdata(to_user),
        cdata(from_user),
        cdata(content)
    )
}

/// The safe-mode reply: our encrypted reply, signed over our own timestamp
/// and nonce.
pub fn encrypted_reply(encrypt: &str, msg_signature: &str, timestamp: u64, nonce: &str) -> String {
    format!(
        "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature>\
         <TimeStamp>{timestamp}</TimeStamp><Nonce>{}</Nonce></xml>",
        cdata(encrypt),
        cdata(msg_signature),
        cdata(nonce)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SCAN: &str = "<xml><ToUserName><![CDATA[gh_xxx]]></ToUserName><FromUserName><![CDATA[OPENID]]></FromUserName>\n<CreateTime>1648535359</CreateTime><MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[SCENE]]></EventKey>\n<Ticket><![CDATA[TICKET]]></Ticket></xml>";

    #[test]
    fn reads_a_scan_event() {
        let push = parse(SCAN.as_bytes()).unwrap();
        assert_eq!(push.to_user_name.as_deref(), Some("gh_xxx"));
        assert_eq!(push.from_user_name.as_deref(), Some("OPENID"));
        assert_eq!(push.create_time, Some(1648535359));
        assert_eq!(push.ticket.as_deref(), Some("TICKET"));
        assert_eq!(push.scene(), Some(("SCENE", ScanKind::Scan)));
        assert_eq!(
            push.dedup_key().as_deref(),
            Some("event:OPENID:1648535359:SCAN:SCENE")
        );
    }

    #[test]
    fn reads_a_subscribe_event_with_its_prefix() {
        let xml = SCAN
            .replace("SCAN", "subscribe")
            .replace("[SCENE]", "[qrscene_SCENE]");
        let push = parse(xml.as_bytes()).unwrap();
        assert_eq!(push.scene(), Some(("SCENE", ScanKind::Subscribe)));
        // A plain follow (no QR) is not a scan.
        let plain = SCAN.replace("SCAN", "subscribe").replace("[SCENE]", "[]");
        assert_eq!(parse(plain.as_bytes()).unwrap().scene(), None);
    }

    #[test]
    fn other_events_and_messages_are_not_scans() {
        let unsub = SCAN.replace("SCAN", "unsubscribe");
        assert_eq!(parse(unsub.as_bytes()).unwrap().scene(), None);
        let text = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>6054768590064713728</MsgId></xml>";
        let push = parse(text.as_bytes()).unwrap();
        assert_eq!(push.scene(), None);
        assert_eq!(push.dedup_key().as_deref(), Some("msg:6054768590064713728"));
    }

    #[test]
    fn reads_a_safe_mode_envelope_and_predefined_entities() {
        let xml = "<?xml version=\"1.0\"?><xml><ToUserName>gh_&amp;&#x41;&#66;</ToUserName><Encrypt><![CDATA[abc+/=]]></Encrypt><!-- c --></xml>";
        let push = parse(xml.as_bytes()).unwrap();
        assert_eq!(push.encrypt.as_deref(), Some("abc+/="));
        assert_eq!(push.to_user_name.as_deref(), Some("gh_&AB"));
    }

    #[test]
    fn nested_lists_are_skipped_not_read() {
        let xml = "<xml><MsgType>event</MsgType><ScanCodeInfo><ScanType>qrcode</ScanType><Event>x</Event></ScanCodeInfo><Event/></xml>";
        let push = parse(xml.as_bytes()).unwrap();
        assert_eq!(push.event.as_deref(), Some(""));
    }

    #[test]
    fn hostile_documents_are_refused() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><xml><ToUserName>&lol2;</ToUserName></xml>";
        assert_eq!(parse(bomb.as_bytes()), Err(XmlError::Doctype));
        let external = "<xml><ToUserName>&xxe;</ToUserName></xml>";
        assert_eq!(parse(external.as_bytes()), Err(XmlError::Entity));
        let deep = format!("<xml>{}", "<a>".repeat(10_000));
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
        let big = format!("<xml><Content>{}</Content></xml>", "a".repeat(MAX_XML));
        assert_eq!(parse(big.as_bytes()), Err(XmlError::TooLarge));
        for unclosed in ["<xml><ToUserName>a", "<xml>", "<xml><a></a>"] {
            assert_eq!(
                parse(unclosed.as_bytes()),
                Err(XmlError::Unclosed),
                "{unclosed}"
            );
        }
        for bad in [
            "",
            "   ",
            "not xml",
            "<xml><a></b></xml>",
            "<xml></xml><xml></xml>",
            "<xml></xml>trailing",
            "</xml>",
            "<xml><ToUserName",
            "<xml><![CDATA[x</xml>",
            "\u{feff}<xml>&#0;</xml>",
            "<xml>&#xD800;</xml>",
            "<xml><ToUserName><![CDATA[a\u{0}b]]></ToUserName></xml>",
            "<xml><ToUserName>a\u{5}</ToUserName></xml>",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(parse(b"<root/>"), Err(XmlError::NotWechat));
        assert_eq!(parse(b"<root></root>"), Err(XmlError::NotWechat));
        assert_eq!(parse(&[0xff, 0xfe, b'<']), Err(XmlError::Syntax));
        let twice = "<xml><FromUserName>a</FromUserName><FromUserName>b</FromUserName></xml>";
        assert_eq!(
            parse(twice.as_bytes()),
            Err(XmlError::Duplicate("FromUserName"))
        );
        let nan = "<xml><CreateTime>soon</CreateTime></xml>";
        assert_eq!(
            parse(nan.as_bytes()),
            Err(XmlError::BadNumber("CreateTime"))
        );
    }

    #[test]
    fn cdata_survives_its_own_terminator() {
        let reply = text_reply("o]]>penid", "gh_x", 7, "a]]>b]]]]>c\u{0}\n");
        let push = parse(reply.as_bytes()).unwrap();
        assert_eq!(push.to_user_name.as_deref(), Some("o]]>penid"));
        assert_eq!(push.msg_type.as_deref(), Some("text"));
        assert_eq!(push.create_time, Some(7));
        assert!(
            reply.contains("<Content><![CDATA[a]]]]><![CDATA[>b]]]]]]><![CDATA[>c\n]]></Content>")
        );
    }

    #[test]
    fn encrypted_reply_has_wechats_shape() {
        let xml = encrypted_reply("ENC", "SIG", 1409735669, "123");
        assert_eq!(
            xml,
            "<xml><Encrypt><![CDATA[ENC]]></Encrypt><MsgSignature><![CDATA[SIG]]></MsgSignature><TimeStamp>1409735669</TimeStamp><Nonce><![CDATA[123]]></Nonce></xml>"
        );
        assert_eq!(
            parse(xml.as_bytes()).unwrap().encrypt.as_deref(),
            Some("ENC")
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&body);
        }

        #[test]
        fn never_panics_on_near_xml(body in "(<xml>|</xml>|<a>|</a>|<!DOCTYPE x>|<!\\[CDATA\\[|\\]\\]>|&amp;|&x;|&#[0-9]{1,8};|<Event>|</Event>|<Event/>|[a-z<>/&;]){0,60}") {
            let _ = parse(body.as_bytes());
        }

        #[test]
        fn round_trips_any_field_text(from in any::<String>(), content in any::<String>(), time in any::<u64>()) {
            let xml = text_reply(&from, "gh_x", time, &content);
            let push = parse(xml.as_bytes()).unwrap();
            let expected: String = from.chars().filter(|&c| is_xml_char(c)).collect();
            prop_assert_eq!(push.to_user_name, Some(expected));
            prop_assert_eq!(push.create_time, Some(time));
        }
    }
}
