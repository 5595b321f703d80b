//! A blocking face of [`Client`], for programs without an async runtime.

use std::io;
use std::path::PathBuf;

use serde_json::Value;

use super::core::{Client, ClientBuilder};
use super::error::Result;

/// A [`Client`] driven by its own single-threaded runtime.
///
/// The common calls have blocking forms here; [`BlockingClient::run`] runs any async
/// method: `client.run(async |c| c.info().await)`.
#[derive(Debug)]
pub struct BlockingClient {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl BlockingClient {
    /// A client with these settings; it connects on its first call.
    pub fn new(builder: ClientBuilder) -> io::Result<BlockingClient> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(BlockingClient {
            runtime,
            client: builder.build(),
        })
    }

    /// A client with default settings.
    pub fn with_socket(socket: impl Into<PathBuf>) -> io::Result<BlockingClient> {
        Self::new(ClientBuilder::new(socket))
    }

    /// Runs an async call of the inner client to completion.
    pub fn run<T>(&mut self, call: impl AsyncFnOnce(&mut Client) -> T) -> T {
        self.runtime.block_on(call(&mut self.client))
    }

    /// [`Client::execute`].
    pub fn execute(&mut self, command: &str, arguments: Option<&Value>) -> Result<Value> {
        self.run(async |c| c.execute(command, arguments).await)
    }

    /// [`Client::execute_raw`].
    pub fn execute_raw(&mut self, request: &Value) -> Result<Value> {
        self.run(async |c| c.execute_raw(request).await)
    }

    /// The inner client, for its non-async methods.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}
