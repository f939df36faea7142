//! Side threads: a current-thread tokio runtime on a thread of its own, for work that must
//! not wait behind a component's own tasks (span batching, reading the API server's requests
//! off the bus).

/// Starts a thread named `name` running a current-thread runtime forever, and returns its
/// handle. The thread lives as long as the process: what it runs ends with its own tasks.
pub fn side_thread(name: &str) -> std::io::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(rt.handle().clone()));
            rt.block_on(std::future::pending::<()>());
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the side thread ended before it started"))?
}

/// Connects to NATS from `on` (a side thread's runtime), so the connection's socket is read
/// and written there; from the caller's runtime without one.
pub async fn connect_on(
    on: Option<&tokio::runtime::Handle>,
    options: async_nats::ConnectOptions,
    url: String,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let servers = crate::client::nats_servers(&url);
    let Some(rt) = on else {
        return options.connect(servers).await;
    };
    match rt
        .spawn(async move { options.connect(servers).await })
        .await
    {
        Ok(connected) => connected,
        Err(e) => Err(async_nats::ConnectError::with_source(
            async_nats::ConnectErrorKind::Io,
            e,
        )),
    }
}
