//! Parse-level behaviour measured on qemu-ga 7.2, as tables: input bytes to
//! the exact sequence of streamer items. Every input is also fed one byte at a time and in
//! random splits, which must change nothing.

use rand::{Rng, SeedableRng};
use rstest::rstest;

use super::{write_json, Parsed, Streamer, Value};

/// One expected item: a value (as qemu-ga's writer prints it) or an error desc.
#[derive(Clone, Debug, PartialEq)]
enum Out {
    V(String),
    E(String),
}

fn v(json: &str) -> Out {
    Out::V(json.to_owned())
}

fn e(desc: &str) -> Out {
    Out::E(desc.to_owned())
}

const FF: &str = "JSON parse error, stray '\u{FFFD}'";
const EV: &str = "JSON parse error, expecting value";
const PING: &str = r#"{"execute": "guest-ping"}"#;

fn sync(id: &str) -> String {
    format!(r#"{{"execute": "guest-sync", "arguments": {{"id": {id}}}}}"#)
}

fn sync_delimited(id: &str) -> String {
    format!(r#"{{"execute": "guest-sync-delimited", "arguments": {{"id": {id}}}}}"#)
}

fn render(item: Parsed) -> Out {
    match item {
        Parsed::Value(value) => {
            let mut out = Vec::new();
            write_json(&value, &mut out);
            Out::V(String::from_utf8(out).expect("writer output is ASCII"))
        }
        Parsed::Error(desc) => Out::E(desc),
    }
}

fn feed_chunks<'a>(
    streamer: &mut Streamer,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Parsed> {
    let mut items = Vec::new();
    for chunk in chunks {
        streamer.feed(chunk, &mut |item| items.push(item));
    }
    items
}

fn parse(input: &[u8]) -> Vec<Parsed> {
    feed_chunks(&mut Streamer::new(), [input])
}

/// Splits `input` at random points (seeded by its length, so failures reproduce).
fn random_splits(input: &[u8], seed: u64) -> Vec<&[u8]> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ input.len() as u64);
    let mut chunks = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let max = if rest.len() > 1 << 20 { 1 << 20 } else { 64 };
        let n = rng.random_range(1..=max).min(rest.len());
        let (head, tail) = rest.split_at(n);
        chunks.push(head);
        rest = tail;
    }
    chunks
}

/// Feeding in one piece, byte by byte (when small enough to be quick) and in random
/// splits must all give the same items.
fn parse_every_way(input: &[u8]) -> Vec<Parsed> {
    let whole = parse(input);
    if input.len() <= 1 << 16 {
        let bytewise = feed_chunks(&mut Streamer::new(), input.chunks(1));
        assert_eq!(bytewise, whole, "byte-by-byte feeding changed the result");
    }
    for seed in 0..3 {
        let split = feed_chunks(&mut Streamer::new(), random_splits(input, seed));
        assert_eq!(
            split, whole,
            "random splits (seed {seed}) changed the result"
        );
    }
    whole
}

fn check(input: &[u8], expected: &[Out]) {
    let got: Vec<Out> = parse_every_way(input).into_iter().map(render).collect();
    assert_eq!(got, expected, "input {:?}", String::from_utf8_lossy(input));
}

/// Rows whose input is one byte string.
#[rstest]
// A lexer error inside a sync id.
#[case::sync_id_007(br#"{"execute":"guest-sync","arguments":{"id":007}}"#, vec![e("JSON parse error, stray '00'"), e(EV), e(EV)])]
// Framing of sync-delimited and the 0xFF handshake.
#[case::delimited_then_ping(
    br#"{"execute":"guest-sync-delimited","arguments":{"id":6}}{"execute":"guest-ping"}"#,
    vec![v(&sync_delimited("6")), v(PING)]
)]
#[case::two_delimited(
    br#"{"execute":"guest-sync-delimited","arguments":{"id":7}}{"execute":"guest-sync-delimited","arguments":{"id":8}}"#,
    vec![v(&sync_delimited("7")), v(&sync_delimited("8"))]
)]
#[case::handshake(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":9}}", vec![e(FF), v(&sync_delimited("9"))])]
#[case::handshake_after_partial(
    b"{\"execute\":\"guest-ping\", \"arguments\": {\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":10}}",
    vec![e(FF), v(&sync_delimited("10"))]
)]
// 0xFF and other never-valid bytes.
#[case::ff(b"\xff", vec![e(FF)])]
#[case::ff_three(b"\xff\xff\xff", vec![e(FF), e(FF), e(FF)])]
#[case::ff_newline(b"\xff\n", vec![e(FF)])]
#[case::ff_then_ping(b"\xff{\"execute\":\"guest-ping\"}", vec![e(FF), v(PING)])]
#[case::ping_then_ff(b"{\"execute\":\"guest-ping\"}\xff", vec![v(PING), e(FF)])]
#[case::ff_discards_partial(
    b"{\"execute\":\"guest-ping\"\xff{\"execute\":\"guest-sync\",\"arguments\":{\"id\":2}}",
    vec![e(FF), v(&sync("2"))]
)]
#[case::ff_in_string(
    b"{\"execute\":\"guest-pi\xffng\"}",
    vec![e("JSON parse error, stray '\"guest-pi\u{FFFD}'"), e(EV)]
)]
#[case::ff_in_number(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":12\xff34}}", vec![e(FF), e(EV), e(EV)])]
#[case::ff_in_keyword(b"{\"execute\":\"guest-ping\",\"id\":tr\xffue}", vec![e(FF), e(EV)])]
#[case::fe(b"\xfe", vec![e(FF)])]
#[case::continuation_byte(b"\x80", vec![e(FF)])]
#[case::e_acute_outside_string(b"\xc3\xa9", vec![e(FF)])]
#[case::control_04(b"\x04", vec![e("JSON parse error, stray '\u{4}'")])]
#[case::del(b"\x7f", vec![e("JSON parse error, stray '\u{7F}'")])]
#[case::nul(b"\x00", vec![e("JSON parse error, stray ''")])]
// Framing and odd inputs.
#[case::two_in_one_write(
    br#"{"execute":"guest-ping"}{"execute":"guest-sync","arguments":{"id":1}}"#,
    vec![v(PING), v(&sync("1"))]
)]
#[case::whitespace_between(
    b"{\"execute\":\"guest-ping\"} {\"execute\":\"guest-sync\",\"arguments\":{\"id\":2}}\n{\"execute\":\"guest-sync\",\"arguments\":{\"id\":3}}\r\n",
    vec![v(PING), v(&sync("2")), v(&sync("3"))]
)]
#[case::leading_whitespace(b"\n\n \t\r\n  {\"execute\":\"guest-ping\"}", vec![v(PING)])]
#[case::whitespace_only(b" \t\r\n \n", vec![])]
#[case::empty_object(b"{}", vec![v("{}")])]
#[case::arguments_only(br#"{"arguments":{}}"#, vec![v(r#"{"arguments": {}}"#)])]
#[case::array(b"[1,2]", vec![v("[1, 2]")])]
#[case::empty_array(b"[]", vec![v("[]")])]
#[case::array_of_command(br#"[{"execute":"guest-ping"}]"#, vec![v(r#"[{"execute": "guest-ping"}]"#)])]
#[case::string_ends_at_quote(br#""hello""#, vec![v(r#""hello""#)])]
#[case::true_newline(b"true\n", vec![v("true")])]
#[case::null_newline(b"null\n", vec![v("null")])]
#[case::number_waits(b"42", vec![])]
#[case::number_then_newline(b"42\n", vec![v("42")])]
#[case::number_then_command(br#"42{"execute":"guest-ping"}"#, vec![v("42"), v(PING)])]
#[case::bare_keyword(b"hello\n", vec![e("JSON parse error, invalid keyword 'hello'")])]
#[case::execute_number(br#"{"execute": 1}"#, vec![v(r#"{"execute": 1}"#)])]
#[case::execute_null(br#"{"execute": null}"#, vec![v(r#"{"execute": null}"#)])]
#[case::member_order_kept(
    br#"{"arguments":{"id":5},"execute":"guest-sync"}"#,
    vec![v(&sync("5"))]
)]
#[case::duplicate_key(br#"{"execute":"guest-nope","execute":"guest-ping"}"#, vec![e("JSON parse error, duplicate key")])]
#[case::single_quotes(b"{'execute':'guest-ping'}", vec![v(PING)])]
#[case::u_escape_in_name(br#"{"execute":"guest-\u0070ing"}"#, vec![v(PING)])]
#[case::escaped_apostrophe(br#"{"execute":"guest-ping","id":"a\'b"}"#, vec![v(r#"{"execute": "guest-ping", "id": "a'b"}"#)])]
#[case::invalid_escape(br#"{"execute":"guest-ping","id":"a\xb"}"#, vec![e("JSON parse error, invalid escape sequence in string")])]
#[case::short_u_escape(br#"{"execute":"guest-ping","id":"\u12"}"#, vec![e("JSON parse error, \\u12\" is not a valid Unicode character")])]
#[case::non_hex_u_escape(br#"{"execute":"guest-ping","id":"\uZZZZ"}"#, vec![e("JSON parse error, \\uZZZZ is not a valid Unicode character")])]
#[case::lone_high_surrogate(br#"{"execute":"guest-ping","id":"\ud800"}"#, vec![e("JSON parse error, \\ud800 is not a valid Unicode character")])]
#[case::lone_low_surrogate(br#"{"execute":"guest-ping","id":"\udc00"}"#, vec![e("JSON parse error, \\udc00 is not a valid Unicode character")])]
#[case::unpaired_surrogate(br#"{"execute":"guest-ping","id":"\ud800\u0041"}"#, vec![e("JSON parse error, \\ud800 is not a valid Unicode character")])]
#[case::escapes_echoed(
    br#"{"execute":"guest-ping","id":"q\"b\\s/\/ \b\f\n\r\t\u0001\u001f\u007f\u0080\u00e9\u20ac<>&'"}"#,
    vec![v(r#"{"execute": "guest-ping", "id": "q\"b\\s// \b\f\n\r\t\u0001\u001F\u007F\u0080\u00E9\u20AC<>&'"}"#)]
)]
#[case::raw_utf8_echoed(
    b"{\"execute\":\"guest-ping\",\"id\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}",
    vec![v(r#"{"execute": "guest-ping", "id": "\u00E9\u20AC\uD83D\uDE00"}"#)]
)]
#[case::invalid_utf8_truncated(b"{\"execute\":\"guest-ping\",\"id\":\"\xc3(\"}", vec![e("JSON parse error, invalid UTF-8 sequence in string")])]
#[case::invalid_utf8_continuation(b"{\"execute\":\"guest-ping\",\"id\":\"\x80\"}", vec![e("JSON parse error, invalid UTF-8 sequence in string")])]
#[case::invalid_utf8_overlong(b"{\"execute\":\"guest-ping\",\"id\":\"\xc0\xaf\"}", vec![e("JSON parse error, invalid UTF-8 sequence in string")])]
#[case::invalid_utf8_surrogate(b"{\"execute\":\"guest-ping\",\"id\":\"\xed\xa0\x80\"}", vec![e("JSON parse error, invalid UTF-8 sequence in string")])]
#[case::invalid_utf8_in_command(b"{\"execute\":\"guest-p\xc3(ing\"}", vec![e("JSON parse error, invalid UTF-8 sequence in string")])]
#[case::modified_utf8_nul(b"{\"execute\":\"guest-ping\",\"id\":\"a\xc0\x80b\"}", vec![v(r#"{"execute": "guest-ping", "id": "a\u0000b"}"#)])]
#[case::u0000_escape(br#"{"execute":"guest-ping","id":"a\u0000b"}"#, vec![v(r#"{"execute": "guest-ping", "id": "a\u0000b"}"#)])]
#[case::raw_control_in_string(b"{\"execute\":\"guest-ping\",\"id\":\"a\x01b\"}", vec![e("JSON parse error, stray '\"a\u{1}'"), e(EV)])]
#[case::raw_tab_in_string(b"{\"execute\":\"guest-ping\",\"id\":\"a\tb\"}", vec![e("JSON parse error, stray '\"a\t'"), e(EV)])]
#[case::raw_newline_in_string(b"{\"execute\":\"guest-ping\",\"id\":\"a\nb\"}", vec![e("JSON parse error, stray '\"a\n'"), e(EV)])]
#[case::nul_after(b"{\"execute\":\"guest-ping\"}\x00", vec![v(PING), e("JSON parse error, stray ''")])]
#[case::nul_before(b"\x00{\"execute\":\"guest-ping\"}", vec![e("JSON parse error, stray ''"), v(PING)])]
#[case::nul_in_string(b"{\"execute\":\"guest-p\x00ing\"}", vec![e("JSON parse error, stray '\"guest-p'"), e(EV)])]
#[case::nul_before_colon(
    b"{\"execute\"\x00:\"guest-ping\"}",
    vec![e("JSON parse error, stray ''"), e(EV), v(r#""guest-ping""#), e(EV)]
)]
#[case::trailing_comma(br#"{"execute":"guest-ping",}"#, vec![e(EV)])]
#[case::missing_value(br#"{"execute":}"#, vec![e(EV)])]
#[case::lone_rcurly(b"}", vec![e(EV)])]
#[case::lone_rsquare(b"]", vec![e(EV)])]
#[case::value_is_comma(br#"{"a":,}"#, vec![e(EV)])]
#[case::array_trailing_comma(b"[1,]", vec![e(EV)])]
#[case::object_lone_comma(b"{,}", vec![e(EV)])]
#[case::missing_colon(br#"{"execute" "guest-ping"}"#, vec![e("JSON parse error, missing : in object pair")])]
#[case::key_only(br#"{"a"}"#, vec![e("JSON parse error, missing : in object pair")])]
#[case::missing_comma_dict(br#"{"a":1 "b":2}"#, vec![e("JSON parse error, expected separator in dict")])]
#[case::number_then_letter(br#"{"execute":"guest-ping","id":12x}"#, vec![e("JSON parse error, expected separator in dict")])]
#[case::missing_comma_list(b"[1 2]", vec![e("JSON parse error, expected separator in list")])]
#[case::number_key(b"{1:2}", vec![e("JSON parse error, key is not a string in object")])]
#[case::unquoted_value(br#"{"execute":guest-ping}"#, vec![e("JSON parse error, stray '-p'"), e(EV)])]
#[case::unquoted_key(br#"{execute:"guest-ping"}"#, vec![e("JSON parse error, invalid keyword 'execute'")])]
#[case::extra_rcurly(br#"{"execute":"guest-ping"}}"#, vec![v(PING), e(EV)])]
#[case::trailing_word(b"{\"execute\":\"guest-ping\"} xyz\n", vec![v(PING), e("JSON parse error, invalid keyword 'xyz'")])]
#[case::percent_value(br#"{"execute":"guest-sync","arguments":{"id":%d}}"#, vec![e("JSON parse error, stray '%'"), e(EV), e(EV)])]
#[case::leading_zero_value(br#"{"execute":"guest-sync","arguments":{"id":01}}"#, vec![e("JSON parse error, stray '01'"), e(EV), e(EV)])]
#[case::plus_value(br#"{"execute":"guest-sync","arguments":{"id":+1}}"#, vec![e("JSON parse error, stray '+'"), e(EV), e(EV)])]
#[case::uppercase_value(br#"{"execute":"guest-sync","arguments":{"id":TRUE}}"#, vec![e("JSON parse error, stray 'T'"), e(EV), e(EV)])]
#[case::minus_swallows_brace(
    br#"-{"execute":"guest-ping"}"#,
    vec![e("JSON parse error, stray '-{'"), e(EV), v(r#""guest-ping""#), e(EV)]
)]
#[case::dot_swallows_brace(
    br#"1.{"execute":"guest-ping"}"#,
    vec![e("JSON parse error, stray '1.{'"), e(EV), v(r#""guest-ping""#), e(EV)]
)]
#[case::exponent_swallows_brace(
    br#"1e{"execute":"guest-ping"}"#,
    vec![e("JSON parse error, stray '1e{'"), e(EV), v(r#""guest-ping""#), e(EV)]
)]
// Partial input of one client followed by the next client's bytes (one parser).
#[case::leak_completes_sync(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":5}}", vec![v(&sync("5"))])]
#[case::leak_swallows_syncs(
    br#"{"execute":"guest-ping"{"execute":"guest-sync","arguments":{"id":6}}{"execute":"guest-sync","arguments":{"id":7}}}{"execute":"guest-sync","arguments":{"id":8}}"#,
    vec![e("JSON parse error, expected separator in dict"), v(&sync("8"))]
)]
#[case::leak_open_string(
    b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":\"ab{\"execute\":\"guest-sync\",\"arguments\":{\"id\":9}}\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":10}}",
    vec![
        e("JSON parse error, stray '-s'"),
        e(EV),
        v(r#""arguments""#),
        e(EV),
        v(r#"{"id": 9}"#),
        e(EV),
        e(FF),
        v(&sync_delimited("10")),
    ]
)]
// Other lexer paths.
#[case::ff_inside_string_after_escape(b"\"a\\\xff", vec![e("JSON parse error, stray '\"a\\\u{FFFD}'")])]
#[case::keyword_then_uppercase(b"trueX", vec![v("true"), e("JSON parse error, stray 'X'")])]
#[case::zero_then_letter(b"[0e5]", vec![e("JSON parse error, expected separator in list")])]
#[case::negative_numbers(b"[-0,-1.5e-3,-7]", vec![v("[0, -0.0015, -7]")])]
#[case::minus_zero_double(b"[-0.0]", vec![v("[-0]")])]
#[case::recovery_skips_tab_but_not_newline(b"%abc\tdef\nnull ", vec![e("JSON parse error, stray '%'"), v("null")])]
#[case::recovery_ends_at_control(b"%abc\x01", vec![e("JSON parse error, stray '%'"), e("JSON parse error, stray '\u{1}'")])]
#[case::single_quoted_with_double(br#"['a"b']"#, vec![v(r#"["a\"b"]"#)])]
#[case::mismatched_closers(b"[}", vec![e(EV)])]
#[case::mismatched_nested(b"[{]}", vec![e(EV)])]
#[case::separator_before_wrong_closer(b"[1}", vec![e("JSON parse error, expected separator in list")])]
#[case::dict_wrong_closer(br#"{"a":1]"#, vec![e("JSON parse error, expected separator in dict")])]
#[case::container_key(br#"{[1]:2}"#, vec![e("JSON parse error, key is not a string in object")])]
#[case::container_key_error_first(br#"{[1 2]:2}"#, vec![e("JSON parse error, expected separator in list")])]
#[case::bad_value_before_duplicate(br#"{"a":1,"a":[1 2]}"#, vec![e("JSON parse error, expected separator in list")])]
#[case::keyword_key(b"{true:1}", vec![e("JSON parse error, key is not a string in object")])]
#[case::invalid_keyword_key(b"{tru:1}", vec![e("JSON parse error, invalid keyword 'tru'")])]
#[case::noncharacter_escape(br#"["\uFFFE"]"#, vec![e("JSON parse error, \\uFFFE is not a valid Unicode character")])]
#[case::noncharacter_raw(b"[\"\xef\xbf\xbf\"]", vec![e("JSON parse error, invalid UTF-8 sequence in string")])]
#[case::stray_token_keeps_valid_utf8(b"\"\xc3\xa9\x01", vec![e("JSON parse error, stray '\"\u{E9}\u{1}'")])]
#[case::stray_token_modified_nul(b"\"\xc0\x80\x01", vec![e("JSON parse error, stray '\"\0\u{1}'")])]
#[case::nul_key(br#"{"a\u0000":1}"#, vec![v(r#"{"a\u0000": 1}"#)])]
fn rows(#[case] input: &[u8], #[case] expected: Vec<Out>) {
    check(input, &expected);
}

/// Values whose number class matters: printed forms alone cannot tell int from double.
#[rstest]
#[case::zero("0", Value::Int(0))]
#[case::one("1", Value::Int(1))]
#[case::minus_one("-1", Value::Int(-1))]
#[case::minus_zero("-0", Value::Int(0))]
#[case::i64_max("9223372036854775807", Value::Int(i64::MAX))]
#[case::i64_min("-9223372036854775808", Value::Int(i64::MIN))]
#[case::above_i64("9223372036854775808", Value::UInt(9_223_372_036_854_775_808))]
#[case::u64_max("18446744073709551615", Value::UInt(u64::MAX))]
#[case::above_u64("18446744073709551616", Value::Float(18_446_744_073_709_551_616.0))]
#[case::below_i64("-9223372036854775809", Value::Float(-9_223_372_036_854_775_808.0))]
#[case::huge("99999999999999999999999999999", Value::Float(1e29))]
#[case::exponent("1e3", Value::Float(1000.0))]
#[case::integral_double("1.0", Value::Float(1.0))]
#[case::fraction("1.5", Value::Float(1.5))]
#[case::overflow("1E400", Value::Float(f64::INFINITY))]
#[case::string_number(r#""1""#, Value::String("1".into()))]
fn sync_id_classes(#[case] id: &str, #[case] expected: Value) {
    let input = format!(r#"{{"execute":"guest-sync","arguments":{{"id":{id}}}}}"#);
    let items = parse_every_way(input.as_bytes());
    let [Parsed::Value(Value::Object(command))] = items.as_slice() else {
        panic!("one object expected, got {items:?}");
    };
    let arguments = command.get("arguments").and_then(Value::as_object);
    assert_eq!(arguments.and_then(|a| a.get("id")), Some(&expected));
}

#[rstest]
#[case::one_and_a_half("1.5", "1.5")]
#[case::tenth("0.1", "0.10000000000000001")]
#[case::thousand("1e3", "1000")]
#[case::overflow("1E400", "inf")]
#[case::huge("99999999999999999999999", "9.9999999999999992e+22")]
#[case::u64_max("18446744073709551615", "18446744073709551615")]
fn echoed_numbers(#[case] id: &str, #[case] printed: &str) {
    let input = format!(r#"{{"execute":"guest-ping","id":{id}}}"#);
    check(
        input.as_bytes(),
        &[v(&format!(
            r#"{{"execute": "guest-ping", "id": {printed}}}"#
        ))],
    );
}

#[rstest]
#[case::integer("42")]
#[case::string(r#""abc""#)]
#[case::null("null")]
#[case::bool("true")]
#[case::empty_string(r#""""#)]
#[case::empty_object("{}")]
#[case::array(r#"[1,"a",null]"#)]
fn ids_of_any_type_are_kept(#[case] id: &str) {
    let input = format!(r#"{{"execute":"guest-ping","id":{id}}}"#);
    let items = parse_every_way(input.as_bytes());
    let [Parsed::Value(Value::Object(command))] = items.as_slice() else {
        panic!("one object expected, got {items:?}");
    };
    let id_value = command.get("id").expect("id kept");
    let reparsed = parse(format!("[{id}]").as_bytes());
    assert_eq!(
        reparsed,
        vec![Parsed::Value(Value::Array(vec![id_value.clone()]))]
    );
}

/// Writes that arrive apart: what each write produces, given the ones before it.
#[rstest]
#[case::four_writes(&[
    (br#"{"exec"#.as_slice(), vec![]),
    (br#"ute":"guest-sy"#, vec![]),
    (br#"nc","arguments":{"id":"#, vec![]),
    (b"77}}", vec![v(&sync("77"))]),
])]
#[case::byte_by_byte_id(&[
    (br#"{"execute":"guest-sync","arguments":{"id":1"#.as_slice(), vec![]),
    (b"2", vec![]),
    (b"3", vec![]),
    (b"}", vec![]),
    (b"}", vec![v(&sync("123"))]),
])]
#[case::partial_then_ff_then_ping(&[
    (br#"{"execute":"guest-sync", "arguments": {"id": 7"#.as_slice(), vec![]),
    (b"\xff", vec![e(FF)]),
    (br#"{"execute":"guest-ping"}"#, vec![v(PING)]),
])]
#[case::leak_across_clients(&[
    (br#"{"execute":"guest-sync","arguments":{"id":77}"#.as_slice(), vec![]),
    (b"}", vec![v(&sync("77"))]),
])]
#[case::number_waits_for_a_terminator(&[
    (b"42".as_slice(), vec![]),
    (b"\n", vec![v("42")]),
])]
fn split_writes(#[case] writes: &[(&[u8], Vec<Out>)]) {
    let mut streamer = Streamer::new();
    for (n, (write, expected)) in writes.iter().enumerate() {
        let got: Vec<Out> = feed_chunks(&mut streamer, [*write])
            .into_iter()
            .map(render)
            .collect();
        assert_eq!(&got, expected, "write {n}");
    }
}

fn repeat(parts: &[(&[u8], usize)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (bytes, n) in parts {
        for _ in 0..*n {
            out.extend_from_slice(bytes);
        }
    }
    out
}

const NESTING: &str = "JSON nesting depth limit exceeded";

#[test]
fn depth_1024_is_allowed() {
    let items = parse_every_way(&repeat(&[(b"[", 1024), (b"]", 1024)]));
    let [Parsed::Value(value)] = items.as_slice() else {
        panic!("one value expected, got {} items", items.len());
    };
    let mut depth = 0;
    let mut at = value;
    while let Value::Array(items) = at {
        depth += 1;
        match items.first() {
            Some(inner) => at = inner,
            None => break,
        }
    }
    assert_eq!(depth, 1024);
}

#[test]
fn depth_1025_floods_expecting_value() {
    let items: Vec<Out> = parse_every_way(&repeat(&[(b"[", 1025), (b"]", 1025)]))
        .into_iter()
        .map(render)
        .collect();
    assert_eq!(items.len(), 1026);
    assert_eq!(items[0], e(NESTING));
    assert!(items[1..].iter().all(|item| *item == e(EV)));
}

#[test]
fn depth_2000_gives_one_value_then_the_flood() {
    let items: Vec<Out> = parse_every_way(&repeat(&[(b"[", 2000), (b"]", 2000)]))
        .into_iter()
        .map(render)
        .collect();
    assert_eq!(items.len(), 1027);
    assert_eq!(items[0], e(NESTING));
    assert!(matches!(&items[1], Out::V(text) if text.starts_with("[[") && text.len() == 975 * 2));
    assert!(items[2..].iter().all(|item| *item == e(EV)));
}

#[test]
fn depth_2000_inside_arguments() {
    let input = repeat(&[
        (br#"{"execute":"guest-ping","arguments":"#, 1),
        (b"[", 2000),
        (b"]", 2000),
        (b"}", 1),
    ]);
    let items: Vec<Out> = parse_every_way(&input).into_iter().map(render).collect();
    assert_eq!(items.len(), 1027);
    assert_eq!(items[0], e(NESTING));
    assert!(matches!(&items[1], Out::V(text) if text.starts_with("[[")));
    assert!(items[2..].iter().all(|item| *item == e(EV)));
}

#[test]
fn nested_objects_2000() {
    let input = repeat(&[(br#"{"a":"#, 2000), (b"1", 1), (b"}", 2000)]);
    let items: Vec<Out> = parse_every_way(&input).into_iter().map(render).collect();
    assert_eq!(items.len(), 1029);
    assert_eq!(items[0], e(NESTING));
    assert_eq!(items[1], v(r#""a""#));
    assert_eq!(items[2], e(EV));
    assert!(matches!(&items[3], Out::V(text) if text.starts_with(r#"{"a": {"a": "#)));
    assert!(items[4..].iter().all(|item| *item == e(EV)));
}

#[test]
fn ten_mib_id_is_kept() {
    let id = "A".repeat(10 << 20);
    let input = format!(r#"{{"execute":"guest-ping","id":"{id}"}}"#);
    let items = parse_every_way(input.as_bytes());
    let [Parsed::Value(Value::Object(command))] = items.as_slice() else {
        panic!("one object expected");
    };
    assert_eq!(
        command.get("id").and_then(Value::as_str).map(str::len),
        Some(10 << 20)
    );
}

#[test]
fn ten_mib_of_spaces_then_ping() {
    let input = repeat(&[(b" ", 10 << 20), (br#"{"execute":"guest-ping"}"#, 1)]);
    check(&input, &[v(PING)]);
}

#[test]
fn string_token_of_64_mib_plus_16() {
    let input = repeat(&[
        (br#"{"execute":"guest-ping","id":""#, 1),
        (b"A", (64 << 20) + 16),
        (br#""}"#, 1),
    ]);
    check(
        &input,
        &[
            e("JSON token size limit exceeded"),
            e("JSON parse error, stray 'A'"),
            e(EV),
        ],
    );
}

#[test]
fn array_of_2_pow_20_plus_1_elements() {
    let input = repeat(&[(b"[", 1), (b"1,", 1 << 20), (b"1]", 1)]);
    check(
        &input,
        &[e("JSON token count limit exceeded"), v("1"), e(EV)],
    );
}

/// The message limit counts the bytes of every token, plus one for the new token:
/// `[` + 32 MiB string + `,` leaves room for a second string of 32 MiB - 4 bytes at most.
#[rstest]
#[case::second_string_too_big((32 << 20) - 2, vec![e("JSON token size limit exceeded"), e(EV)])]
#[case::closer_tips_it_over((32 << 20) - 5, vec![e("JSON token size limit exceeded")])]
#[case::just_fits((32 << 20) - 6, vec![v("two strings")])]
fn message_bytes_limit_counts_every_token(#[case] second: usize, #[case] expected: Vec<Out>) {
    let first = "B".repeat((32 << 20) - 2);
    let input = format!(r#"["{first}","{}"]"#, "C".repeat(second));
    let got: Vec<Out> = parse_every_way(input.as_bytes())
        .into_iter()
        .map(|item| match item {
            Parsed::Value(Value::Array(items)) if items.len() == 2 => v("two strings"),
            other => render(other),
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn idle_and_reset() {
    let mut streamer = Streamer::new();
    assert!(streamer.is_idle());
    let mut items = Vec::new();
    for (input, idle) in [
        (&b"  \n"[..], true),
        (b"{", false),
        (b"\"a", false),
        (b"\":1}", true),
        (b"42", false),
        (b" ", true),
        (b"\xff", false),
        (b"abc", false),
        (b"\n", true),
    ] {
        streamer.feed(input, &mut |item| items.push(item));
        assert_eq!(
            streamer.is_idle(),
            idle,
            "after {:?}",
            String::from_utf8_lossy(input)
        );
    }
    streamer.feed(
        br#"{"execute":"guest-sync","arguments":{"id":"#,
        &mut |item| items.push(item),
    );
    assert!(!streamer.is_idle());
    streamer.reset();
    assert!(streamer.is_idle());
    let after: Vec<Out> = feed_chunks(&mut streamer, [br#"{"execute":"guest-ping"}"#.as_slice()])
        .into_iter()
        .map(render)
        .collect();
    assert_eq!(after, vec![v(PING)]);
}

/// Random inputs: never a panic, and the chunking never shows.
#[test]
fn random_bytes_parse_the_same_in_any_chunking() {
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\"",
        b"'",
        b"\\",
        b" ",
        b"\n",
        b"\t",
        b"0",
        b"1",
        b"-",
        b".",
        b"e",
        b"+",
        b"true",
        b"nul",
        b"\"k\"",
        b"\\u",
        b"\\ud83d",
        b"00e9",
        b"\xff",
        b"\x00",
        b"\x01",
        b"\xc3\xa9",
        b"\xc3",
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\xef\xbf\xbe",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xB17E5);
    for round in 0..3000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let len = rng.random_range(0..300);
            (0..len).map(|_| rng.random::<u8>()).collect()
        } else {
            let len = rng.random_range(0..120);
            (0..len)
                .flat_map(|_| PIECES[rng.random_range(0..PIECES.len())].iter().copied())
                .collect()
        };
        let whole = parse(&input);
        let bytewise = feed_chunks(&mut Streamer::new(), input.chunks(1));
        assert_eq!(bytewise, whole, "input {input:?}");
        let split = feed_chunks(&mut Streamer::new(), random_splits(&input, round));
        assert_eq!(split, whole, "input {input:?}");
    }
}

fn random_string(rng: &mut rand::rngs::StdRng) -> String {
    const CHARS: &[char] = &[
        'a',
        'Z',
        '"',
        '\\',
        '/',
        '\'',
        '\0',
        '\u{1}',
        '\u{8}',
        '\n',
        '\u{1f}',
        '\u{7f}',
        '\u{80}',
        '\u{e9}',
        '\u{20ac}',
        '\u{fdd0}',
        '\u{fffd}',
        '\u{ffff}',
        '\u{1f600}',
        '\u{10ffff}',
        ' ',
        '<',
        '&',
    ];
    let len = rng.random_range(0..12);
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())])
        .collect()
}

fn random_value(rng: &mut rand::rngs::StdRng, depth: u32) -> Value {
    let kinds = if depth >= 4 { 7 } else { 9 };
    match rng.random_range(0..kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => Value::Int(rng.random()),
        3 => Value::from(rng.random::<u64>()),
        4 => loop {
            let f = f64::from_bits(rng.random());
            // `-0` reads back as the integer 0, and inf/nan print as bare words.
            if f.is_finite() && f != 0.0 {
                break Value::Float(f);
            }
        },
        5 | 6 => Value::String(random_string(rng)),
        7 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut object = super::Object::new();
            for _ in 0..rng.random_range(0..6) {
                // Keys QEMU can hold: noncharacters would print as U+FFFD, a different key
                // with a different hash bucket.
                let key: String = random_string(rng)
                    .chars()
                    .filter(|&c| super::utf8::is_valid_code_point(u32::from(c)))
                    .collect();
                object.insert(key, random_value(rng, depth + 1));
            }
            Value::Object(object)
        }
    }
}

/// Objects with their members sorted by key, recursively.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        Value::Object(object) => {
            let mut members: Vec<(&str, &Value)> = object.iter().collect();
            members.sort_by_key(|(k, _)| *k);
            let mut out = super::Object::new();
            for (k, v) in members {
                out.insert(k, sorted(v));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn printed(value: &Value) -> String {
    let mut out = Vec::new();
    write_json(value, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// What the writer prints, the parser reads back to the same value. Member order may differ:
/// keys that share a QDict bucket swap on every echo, as in qemu-ga.
#[test]
fn writer_output_reads_back_to_itself() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0A11CE);
    for _ in 0..3000 {
        let value = random_value(&mut rng, 0);
        let mut line = Vec::new();
        write_json(&value, &mut line);
        assert!(line.is_ascii(), "non-ASCII output for {value:?}");
        // A newline ends a top-level number, as in a real reply line.
        line.push(b'\n');
        let items = parse(&line);
        let [Parsed::Value(read)] = items.as_slice() else {
            panic!(
                "{:?} read back as {items:?}",
                String::from_utf8_lossy(&line)
            );
        };
        assert_eq!(printed(&sorted(read)), printed(&sorted(&value)));
    }
}
