//! Reply faults, byte for byte: made-up replies carry the request's id where qemu-ga
//! would put it, in qemu-ga's format; deformed replies differ only where the fault says.

mod common;

use std::time::Duration;

use common::*;
use rstest::rstest;
use tokio::time::Instant;

/// One request, with a mock of these rules; returns everything the client got.
async fn exchange(specs: &[&str], request: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, specs).await;
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(request).await;
    client.until_quiet().await
}

#[rstest]
#[case::return_value(&["guest-ping:return='\"5\"'"], ping(1), b"{\"return\": \"5\", \"id\": 1}\n".to_vec())]
#[case::error(&["guest-ping:error=CommandDisabled/'it is off'"], ping(1),
    b"{\"id\": 1, \"error\": {\"class\": \"CommandDisabled\", \"desc\": \"it is off\"}}\n".to_vec())]
#[case::error_not_object(&["guest-ping:error-not-object='\"random error\"'"], ping(1),
    b"{\"id\": 1, \"error\": \"random error\"}\n".to_vec())]
#[case::return_and_error(&["guest-ping:return-and-error"], ping(1),
    b"{\"return\": {}, \"id\": 1, \"error\": {\"class\": \"GenericError\", \"desc\": \"An unexpected error occurred\"}}\n".to_vec())]
#[case::neither(&["guest-ping:neither"], ping(1), b"{\"id\": 1}\n".to_vec())]
#[case::neither_without_id(&["guest-ping:neither"], br#"{"execute":"guest-ping"}"#.to_vec(), b"{}\n".to_vec())]
#[case::reply_to_no_reply(&["guest-suspend-ram:reply-to-no-reply"], execute("guest-suspend-ram", 1),
    b"{\"return\": {}, \"id\": 1}\n".to_vec())]
#[case::no_reply(&["guest-ping@1:no-reply"], [ping(1), ping(2)].concat(), ping_reply(2))]
#[case::raw(&["guest-ping:raw='\\xff{}\\r\\n'"], ping(1), b"\xff{}\r\n".to_vec())]
#[case::raw_before(&[r#"{"when":{"command":"guest-ping"},"do":[{"action":"raw","text":"x\n","position":"before"}]}"#],
    ping(1), [b"x\n".to_vec(), ping_reply(1)].concat())]
#[case::raw_after(&[r#"{"when":{"command":"guest-ping"},"do":[{"action":"raw","base64":"/w==","position":"after"}]}"#],
    ping(1), [ping_reply(1), vec![0xff]].concat())]
#[case::garbage_text(&["guest-ping:garbage=text"], ping(1), b"qemu-ga: garbage on the channel, not JSON\n".to_vec())]
#[case::garbage_nul(&["guest-ping:garbage=nul"], ping(1), b"\0\0\0\0\0\0\0\0\n".to_vec())]
#[case::garbage_invalid_utf8(&["guest-ping:garbage=invalid-utf8"], ping(1),
    b"{\"return\": \"caf\xe9 \xc3( \xed\xa0\x80\", \"id\": 1}\n".to_vec())]
#[case::garbage_ff(&["guest-ping:garbage=ff"], ping(1), [vec![0xff], ping_reply(1)].concat())]
#[case::garbage_half_object(&["guest-ping:garbage=half-object"], ping(1), b"{\"return\": \n".to_vec())]
#[case::garbage_crlf(&["guest-ping:garbage=crlf"], ping(1), b"{\"return\": {}, \"id\": 1}\r\n".to_vec())]
#[case::garbage_ff_prefix(&["guest-sync:garbage=ff-prefix"], sync(7), b"\xff{\"return\": 7}\n".to_vec())]
#[case::wrong_id_string(&["guest-sync:wrong-sync-id=string"], sync(4294967301), b"{\"return\": \"4294967301\"}\n".to_vec())]
#[case::wrong_id_float(&["guest-sync:wrong-sync-id=float"], sync(4294967301), b"{\"return\": 4294967301.0}\n".to_vec())]
#[case::wrong_id_off_by_one(&["guest-sync:wrong-sync-id=off-by-one"], sync(4294967301), b"{\"return\": 4294967302}\n".to_vec())]
#[case::wrong_id_truncate32(&["guest-sync:wrong-sync-id=truncate32"], sync(4294967301), b"{\"return\": 5}\n".to_vec())]
#[case::wrong_id_delimited(&["guest-sync-delimited:wrong-sync-id=off-by-one"], sync_delimited(41), b"\xff{\"return\": 42}\n".to_vec())]
#[case::wrong_id_not_a_sync(&["*:wrong-sync-id=float"], ping(1), ping_reply(1))]
#[case::duplicate(&["guest-ping:duplicate"], ping(1), [ping_reply(1), ping_reply(1)].concat())]
#[case::spurious_other_command(&["guest-ping:spurious=other-command"], ping(1),
    [b"{\"return\": {}}\n".to_vec(), ping_reply(1)].concat())]
#[case::spurious_after(&["guest-ping:spurious=other-command/after"], ping(1),
    [ping_reply(1), b"{\"return\": {}}\n".to_vec()].concat())]
#[case::stale_sync(&["guest-ping:spurious=stale-sync"], [sync_delimited(31), ping(1)].concat(),
    [b"\xff{\"return\": 31}\n".to_vec(), b"\xff{\"return\": 31}\n".to_vec(), ping_reply(1)].concat())]
#[case::spurious_duplicate(&["guest-ping:spurious=duplicate"], [sync(9), ping(1)].concat(),
    [b"{\"return\": 9}\n".to_vec(), b"{\"return\": 9}\n".to_vec(), ping_reply(1)].concat())]
#[case::nesting_bomb(&["guest-ping:nesting-bomb=3"], ping(1), b"{\"return\": [[[]]], \"id\": 1}\n".to_vec())]
#[case::two_rules_compose(&["guest-ping:return=5", "guest-ping:garbage=crlf"], ping(1), b"{\"return\": 5, \"id\": 1}\r\n".to_vec())]
#[tokio::test(start_paused = true)]
async fn reply_faults_give_exact_bytes(
    #[case] specs: &[&str],
    #[case] request: Vec<u8>,
    #[case] expected: Vec<u8>,
) {
    assert_eq!(show(&exchange(specs, &request).await), show(&expected));
}

#[tokio::test(start_paused = true)]
async fn a_stale_sync_without_an_earlier_sync_is_a_made_up_old_id() {
    let got = exchange(&["guest-ping:spurious=stale-sync"], &ping(1)).await;
    let text = String::from_utf8(got).expect("ascii");
    let (stale, rest) = text.split_once('\n').expect("two lines");
    let value: serde_json::Value = serde_json::from_str(stale).expect("json");
    assert!(value["return"].as_i64().is_some_and(|n| n > 0), "{stale}");
    assert_eq!(
        format!("{rest}"),
        String::from_utf8(ping_reply(1)).expect("ascii")
    );
    // The same seed makes the same id.
    let again = exchange(&["guest-ping:spurious=stale-sync"], &ping(1)).await;
    assert_eq!(again, text.as_bytes());
}

#[tokio::test(start_paused = true)]
async fn an_unknown_id_is_never_the_requests_and_of_another_type() {
    for (request, id) in [
        (ping(1), serde_json::json!(1)),
        (
            br#"{"execute":"guest-ping","id":"a"}"#.to_vec(),
            serde_json::json!("a"),
        ),
    ] {
        let got = exchange(&["guest-ping:spurious=unknown-id"], &request).await;
        let text = String::from_utf8(got).expect("ascii");
        let (spurious, _) = text.split_once('\n').expect("two lines");
        assert!(
            spurious.starts_with("{\"return\": {}, \"id\": "),
            "{spurious}"
        );
        let value: serde_json::Value = serde_json::from_str(spurious).expect("json");
        assert_ne!(value["id"], id);
        assert_ne!(value["id"].is_string(), id.is_string(), "{spurious}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_event_shaped_object_comes_before_the_reply() {
    let got = exchange(&["guest-ping:spurious=event"], &ping(1)).await;
    let text = String::from_utf8(got).expect("ascii");
    let (event, rest) = text.split_once('\n').expect("two lines");
    let value: serde_json::Value = serde_json::from_str(event).expect("json");
    assert_eq!(value["event"], "SHUTDOWN");
    assert!(value["timestamp"]["seconds"].is_i64(), "{event}");
    assert!(event.contains("\": "), "qemu's separators: {event}");
    assert_eq!(
        format!("{rest}"),
        String::from_utf8(ping_reply(1)).expect("ascii")
    );
}

#[tokio::test(start_paused = true)]
async fn a_swapped_reply_comes_after_the_next_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping@1:swap"]).await;
    let mut client = Client::connect(mock.socket_path()).await;

    client.send(&ping(1)).await;
    client.expect_quiet().await;
    client.send(&sync(2)).await;
    client.expect(b"{\"return\": 2}\n").await;
    client.expect(&ping_reply(1)).await;
}

#[tokio::test(start_paused = true)]
async fn swapping_every_reply_trades_them_in_pairs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping:swap"]).await;
    let mut client = Client::connect(mock.socket_path()).await;
    let four: Vec<u8> = (1..=4).flat_map(ping).collect();
    client.send(&four).await;
    let expected: Vec<u8> = [2, 1, 4, 3].into_iter().flat_map(ping_reply).collect();
    client.expect(&expected).await;
}

#[tokio::test(start_paused = true)]
async fn a_delay_and_a_made_up_return_compose() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(
        &dir,
        &["guest-network-get-interfaces:delay=200ms,return='[{\"name\": \"veth0\"}]'"],
    )
    .await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();
    client
        .send(&execute("guest-network-get-interfaces", 1))
        .await;
    client
        .expect(b"{\"return\": [{\"name\": \"veth0\"}], \"id\": 1}\n")
        .await;
    assert_eq!(since(start), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn an_oversize_reply_is_a_string_of_n_mib_with_the_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(
        &dir,
        &[
            "guest-get-osinfo@1:oversize=12",
            "guest-get-osinfo@2:oversize=2/no-newline",
        ],
    )
    .await;
    let mut client = Client::connect(mock.socket_path()).await;

    client.send(&execute("guest-get-osinfo", 1)).await;
    let head = b"{\"return\": \"";
    let tail = b"\", \"id\": 1}\n";
    let got = client.exact(head.len() + (12 << 20) + tail.len()).await;
    assert_eq!(&got[..head.len()], head);
    assert_eq!(&got[got.len() - tail.len()..], tail);
    assert!(got[head.len()..got.len() - tail.len()]
        .iter()
        .all(|&b| b == b'A'));

    client.send(&execute("guest-get-osinfo", 2)).await;
    let tail = b"\", \"id\": 2}";
    let got = client.exact(head.len() + (2 << 20) + tail.len()).await;
    assert_eq!(&got[got.len() - tail.len()..], tail);
    client.expect_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_deep_nesting_bomb_is_streamed() {
    let got = exchange(&["guest-ping:nesting-bomb=100000"], &ping(1)).await;
    assert_eq!(got.len(), b"{\"return\": , \"id\": 1}\n".len() + 200_000);
    assert!(got.starts_with(b"{\"return\": [[[["));
    assert!(got.ends_with(b"]]]], \"id\": 1}\n"));
}
