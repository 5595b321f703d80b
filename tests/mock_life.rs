//! The agent's life under the controller, and what guest-shutdown and guest-suspend-* do to
//! the VM (qemu-guest.md §4(e)).

mod common;

use std::time::Duration;

use common::*;
use qga_harness::{AgentState, LifeError, MockAgent, PowerPolicy, VmEnd};
use tokio::time::Instant;

#[tokio::test]
async fn life_commands_move_the_agent_between_states() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .start_manually()
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let life = mock.life();
    use AgentState::*;

    assert_eq!(life.state(), NotStarted);
    assert!(matches!(
        life.hang().await,
        Err(LifeError::NotApplicable {
            state: NotStarted,
            ..
        })
    ));
    assert_eq!(life.start().await, Ok(Running));
    assert!(matches!(
        life.start().await,
        Err(LifeError::NotApplicable { state: Running, .. })
    ));
    assert_eq!(life.hang().await, Ok(Hung));
    assert_eq!(life.hang().await, Ok(Hung));
    assert_eq!(life.resume().await, Ok(Running));
    assert_eq!(life.resume().await, Ok(Running));
    assert_eq!(life.stop().await, Ok(Dead));
    assert!(matches!(
        life.resume().await,
        Err(LifeError::NotApplicable { state: Dead, .. })
    ));
    assert_eq!(life.restart().await, Ok(Running));
    assert_eq!(life.hang().await, Ok(Hung));
    assert_eq!(life.stop().await, Ok(Dead), "a frozen agent cannot finish");
    assert_eq!(life.start().await, Ok(Running));
    assert_eq!(life.kill().await, Ok(Dead));
    assert_eq!(life.kill().await, Ok(Dead));
    assert_eq!(life.vm_exit().await, Ok(VmExited));
    assert_eq!(life.start().await, Err(LifeError::Gone));
    assert_eq!(life.state(), VmExited);
}

#[tokio::test]
async fn a_stopped_agent_leaves_later_input_to_the_next_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&sync(1)).await;
    assert_eq!(client.line().await, sync_reply(1));

    assert_eq!(life.stop().await, Ok(AgentState::Dead));
    client.send(&sync(2)).await;
    life.start().await.expect("start");
    assert_eq!(client.line().await, sync_reply(2));
}

#[tokio::test(start_paused = true)]
async fn a_delayed_restart_answers_what_came_in_meanwhile_late() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;

    let restarted = Instant::now();
    assert_eq!(
        life.restart_after(Duration::from_secs(2)).await,
        Ok(AgentState::Restarting)
    );
    client.send(&sync(7)).await;
    assert_eq!(client.line().await, sync_reply(7));
    assert!(restarted.elapsed() >= Duration::from_secs(2));
    assert_eq!(life.state(), AgentState::Running);
}

#[tokio::test(start_paused = true)]
async fn guest_shutdown_gets_no_reply_then_answers_briefly_then_silence_then_eof() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mock = MockAgent::builder()
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let policy = PowerPolicy::default();
    let mut client = Client::connect(mock.socket_path()).await;

    let shutdown_at = Instant::now();
    client
        .send(br#"{"execute":"guest-shutdown","arguments":{"mode":"powerdown"}}"#)
        .await;
    client.send(&ping("after-shutdown")).await;
    // The agent is still alive: the ping is the first reply, the shutdown has none.
    assert_eq!(client.line().await, ping_reply("after-shutdown"));

    // After the agent went down, the port is silent: this is never answered.
    tokio::time::sleep_until(shutdown_at + policy.answer_for + Duration::from_millis(10)).await;
    assert_eq!(mock.life().state(), AgentState::Dead);
    client.send(&ping("into-the-silence")).await;
    // QEMU exits with the ping unread: the client sees the connection reset.
    assert_eq!(client.until_closed().await, b"");
    assert!(shutdown_at.elapsed() >= policy.answer_for + policy.silent_for);

    assert_eq!(mock.exited().await.expect("exit"), VmEnd::VmExit);
    assert!(!mock.socket_path().exists());
}

#[tokio::test(start_paused = true)]
async fn a_suspended_guest_answers_nothing_until_it_wakes_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let life = mock.life();
    let policy = PowerPolicy::default();
    let mut client = Client::connect(mock.socket_path()).await;

    let suspended_at = Instant::now();
    client.send(br#"{"execute":"guest-suspend-ram"}"#).await;
    client.send(&ping("before")).await;
    assert_eq!(client.line().await, ping_reply("before"));

    tokio::time::sleep_until(suspended_at + policy.answer_for + Duration::from_millis(10)).await;
    assert_eq!(life.state(), AgentState::Suspended);
    let asleep = ping("asleep");
    let read_before = life.channel_status().bytes_in;
    client.send(&asleep).await;
    life.wait_channel(|s| s.bytes_in >= read_before + asleep.len() as u64)
        .await
        .expect("QEMU still takes the bytes");
    // Hours later, still nothing: nothing was written since.
    let written = life.channel_status().bytes_out;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(life.channel_status().bytes_out, written);

    assert_eq!(life.resume().await, Ok(AgentState::Running));
    assert_eq!(client.line().await, ping_reply("asleep"));
}

#[tokio::test(start_paused = true)]
async fn a_suspended_guest_can_wake_up_by_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = PowerPolicy {
        wake_after: Some(Duration::from_secs(10)),
        ..PowerPolicy::default()
    };
    let mock = MockAgent::builder()
        .power_policy(policy)
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let mut client = Client::connect(mock.socket_path()).await;

    let suspended_at = Instant::now();
    client.send(br#"{"execute":"guest-suspend-hybrid"}"#).await;
    tokio::time::sleep_until(suspended_at + policy.answer_for + Duration::from_millis(10)).await;
    assert_eq!(mock.life().state(), AgentState::Suspended);
    client.send(&sync(9)).await;
    assert_eq!(client.line().await, sync_reply(9));
    assert!(suspended_at.elapsed() >= policy.answer_for + Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn hibernation_powers_the_vm_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mock = MockAgent::builder()
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(br#"{"execute":"guest-suspend-disk"}"#).await;
    assert_eq!(client.until_eof().await, b"");
    assert_eq!(mock.exited().await.expect("exit"), VmEnd::VmExit);
}
