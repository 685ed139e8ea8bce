//! Kubelets before 1.26 send the plugin's socket path as the HTTP/2 `:authority`. A client
//! speaking raw HTTP/2 frames (no HTTP library would send such an authority) does exactly
//! that against the real plugin server on a real Unix socket: without the adapter h2 resets
//! the stream; with it (the agent's servers) GetDevicePluginOptions and ListAndWatch answer,
//! also when later requests refer to the rewritten field through the HPACK dynamic table,
//! as Go's encoder does.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::Harness;
use kubesched_device_plugin::devices::socket_name;
use kubesched_device_plugin::kubelet::DevicePluginService;
use kubesched_proto::deviceplugin::v1beta1::device_plugin_server::DevicePluginServer;
use kubesched_proto::deviceplugin::v1beta1::{DevicePluginOptions, ListAndWatchResponse};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

const GPU: &str = "nvidia.com/gpu";
const OPTIONS: &str = "/v1beta1.DevicePlugin/GetDevicePluginOptions";
const LIST_AND_WATCH: &str = "/v1beta1.DevicePlugin/ListAndWatch";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PROTOCOL_ERROR: u32 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    [
        &len.to_be_bytes()[1..],
        &[kind, flags][..],
        &stream.to_be_bytes()[..],
        payload,
    ]
    .concat()
}

/// Plain string literal (all test strings are shorter than 127 bytes).
fn plain(s: &str) -> Vec<u8> {
    [&[u8::try_from(s.len()).unwrap()][..], s.as_bytes()].concat()
}

/// Literal with incremental indexing (it enters the dynamic table) on static name `index`.
fn indexed_name(index: u8, value: &str) -> Vec<u8> {
    [vec![0x40 | index], plain(value)].concat()
}

/// The headers a gRPC client sends first on a connection, all entering the dynamic table:
/// :method POST, :scheme http, then :path, :authority, content-type and te as literals.
fn first_request(path: &str, authority: &str) -> Vec<u8> {
    [
        vec![0x83, 0x86],
        indexed_name(4, path),
        indexed_name(1, authority),
        indexed_name(31, "application/grpc"),
        [vec![0x40], plain("te"), plain("trailers")].concat(),
    ]
    .concat()
}

/// A later request for another method: only :path is new; :authority, content-type and te
/// are indexed references into the dynamic table (te 63, content-type 64, authority 65 once
/// the new :path took index 62).
fn later_request(path: &str) -> Vec<u8> {
    [
        vec![0x83, 0x86],
        indexed_name(4, path),
        vec![0x80 | 65, 0x80 | 64, 0x80 | 63],
    ]
    .concat()
}

/// A unary or server-streaming call's request: HEADERS then one empty gRPC message.
fn call(stream: u32, block: &[u8]) -> Vec<u8> {
    [
        frame(0x1, 0x4, stream, block),
        frame(0x0, 0x1, stream, &[0, 0, 0, 0, 0]),
    ]
    .concat()
}

/// What the server did with a stream.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The first gRPC message's bytes.
    Message(Vec<u8>),
    /// RST_STREAM or GOAWAY with this error code.
    Refused(u32),
}

struct RawClient {
    io: UnixStream,
    read: Vec<u8>,
    data: std::collections::BTreeMap<u32, Vec<u8>>,
}

impl RawClient {
    async fn connect(socket: &Path) -> Self {
        let mut io = UnixStream::connect(socket).await.unwrap();
        io.write_all(&[PREFACE, &frame(0x4, 0, 0, &[])].concat())
            .await
            .unwrap();
        RawClient {
            io,
            read: Vec::new(),
            data: Default::default(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next frame from the server; SETTINGS are acknowledged.
    async fn next_frame(&mut self) -> (u8, u32, Vec<u8>) {
        loop {
            if self.read.len() >= 9 {
                let len = usize::from(self.read[0]) << 16
                    | usize::from(self.read[1]) << 8
                    | usize::from(self.read[2]);
                if self.read.len() >= 9 + len {
                    let (kind, flags) = (self.read[3], self.read[4]);
                    let stream = u32::from_be_bytes(self.read[5..9].try_into().unwrap());
                    let payload = self.read[9..9 + len].to_vec();
                    self.read.drain(..9 + len);
                    if kind == 0x4 && flags & 0x1 == 0 {
                        self.send(&frame(0x4, 0x1, 0, &[])).await;
                    }
                    return (kind, stream, payload);
                }
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut buf))
                .await
                .expect("the server answers within 5 s")
                .unwrap();
            assert!(n > 0, "the server closed the connection");
            self.read.extend_from_slice(&buf[..n]);
        }
    }

    /// The next gRPC message on `stream`, or why there is none.
    async fn answer(&mut self, stream: u32) -> Answer {
        loop {
            if let Some(data) = self.data.get(&stream)
                && data.len() >= 5
            {
                let len =
                    usize::try_from(u32::from_be_bytes(data[1..5].try_into().unwrap())).unwrap();
                if data.len() >= 5 + len {
                    let message = data[5..5 + len].to_vec();
                    self.data.entry(stream).or_default().drain(..5 + len);
                    return Answer::Message(message);
                }
            }
            let (kind, on, payload) = self.next_frame().await;
            match kind {
                0x0 => self.data.entry(on).or_default().extend_from_slice(&payload),
                0x3 if on == stream => {
                    return Answer::Refused(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                0x7 => {
                    return Answer::Refused(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                _ => {}
            }
        }
    }
}

fn message<M: prost::Message + Default>(answer: Answer) -> M {
    match answer {
        Answer::Message(bytes) => M::decode(bytes.as_slice()).unwrap(),
        Answer::Refused(code) => panic!("the server refused the call with error code {code}"),
    }
}

#[tokio::test]
async fn plugin_answers_a_kubelet_that_sends_its_socket_path_as_authority() {
    let mut harness = Harness::start().await;
    harness
        .expect_registrations(3, Duration::from_secs(5))
        .await;
    let socket = harness.dir.0.join(socket_name(GPU));
    let authority = socket.to_str().unwrap().to_string();
    assert!(authority.contains('/'));

    let mut client = RawClient::connect(&socket).await;
    client
        .send(&call(1, &first_request(LIST_AND_WATCH, &authority)))
        .await;
    let listed: ListAndWatchResponse = message(client.answer(1).await);
    let expected = harness.manager.subscribe(GPU).unwrap().borrow().len();
    assert!(expected > 0);
    assert_eq!(listed.devices.len(), expected);
    assert!(listed.devices.iter().all(|d| d.health == "Healthy"));

    // The next call refers to the (rewritten) authority in the dynamic table.
    client.send(&call(3, &later_request(OPTIONS))).await;
    let options: DevicePluginOptions = message(client.answer(3).await);
    assert!(options.get_preferred_allocation_available);

    // The ListAndWatch stream is still open: a health change reaches it.
    let first = listed.devices[0].id.clone();
    harness
        .manager
        .set_fault(std::slice::from_ref(&first), Some("test fault"));
    let changed: ListAndWatchResponse = message(client.answer(1).await);
    let sick = changed.devices.iter().find(|d| d.id == first).unwrap();
    assert_eq!(sick.health, "Unhealthy");
    // (This client does not answer the PING of h2's graceful shutdown: close it first.)
    drop(client);
    harness.shutdown().await;
}

#[tokio::test]
async fn without_the_adapter_h2_refuses_such_a_request() {
    // The same service on a plain tonic server: this is what the adapter exists for.
    let dir = common::TempDir::new();
    let socket = dir.0.join("plain.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let pods = std::sync::Arc::new(kubesched_device_plugin::pods::InMemoryPods::default());
    let (manager, allocator) = common::build_from_fixture(pods);
    let service =
        DevicePluginService::new(GPU.into(), manager, allocator, CancellationToken::new());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(service))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let authority = socket.to_str().unwrap().to_string();
    let mut client = RawClient::connect(&socket).await;
    client
        .send(&call(1, &first_request(OPTIONS, &authority)))
        .await;
    assert_eq!(client.answer(1).await, Answer::Refused(PROTOCOL_ERROR));
    // A valid authority on the same kind of connection works: only the authority is at fault.
    let mut client = RawClient::connect(&socket).await;
    client
        .send(&call(1, &first_request(OPTIONS, "localhost")))
        .await;
    let options: DevicePluginOptions = message(client.answer(1).await);
    assert!(options.get_preferred_allocation_available);
    server.abort();
}
