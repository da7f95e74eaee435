//! [`Hooked`]: an object store that lets a test run what another node does at an exact moment
//! of this one's requests (the follower tests, `secondary.rs` and `mirror.rs`, use it).

use std::sync::{Arc, Mutex};

/// An object store that runs `hook` once, at the point `at` names: what another node does
/// while this one is between its reads, or between its steps.
pub struct Hooked {
    /// The store it passes every request to.
    pub inner: Arc<dyn object_store::ObjectStore>,
    /// Where the hook runs.
    pub at: HookAt,
    /// The hook, taken when it runs.
    pub hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// Where [`Hooked`] runs its hook.
pub enum HookAt {
    /// Before the listing of the WAL's chunks that follows this many others.
    WalListing(std::sync::atomic::AtomicU32),
    /// Before the upload of a WAL start (an owner's, after it listed the chunks).
    WalStartUpload,
}

impl Hooked {
    /// `inner`, running `hook` once at `at`.
    pub fn around(
        inner: Arc<dyn object_store::ObjectStore>,
        at: HookAt,
        hook: impl FnOnce() + Send + 'static,
    ) -> Arc<Hooked> {
        Arc::new(Hooked {
            inner,
            at,
            hook: Mutex::new(Some(Box::new(hook))),
        })
    }

    fn run_hook(&self) {
        if let Some(hook) = self.hook.lock().unwrap().take() {
            // On a thread of its own: the hook drives other stores' runtimes.
            std::thread::spawn(hook).join().unwrap();
        }
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooked({})", self.inner)
    }
}

impl std::fmt::Display for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooked({})", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Hooked {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if matches!(self.at, HookAt::WalStartUpload) && location.as_ref().contains("/walstart/") {
            self.run_hook();
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        use std::sync::atomic::Ordering;
        if let HookAt::WalListing(skip) = &self.at
            && prefix.is_some_and(|p| p.as_ref().ends_with("/wal"))
            && skip
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_err()
        {
            self.run_hook();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
