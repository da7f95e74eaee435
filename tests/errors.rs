//! Errors a caller can meet, and what the store looks like afterwards: every refused input is
//! of the right kind, names what was wrong, and changes nothing; stray files are swept; locks,
//! timeouts and closing behave as documented. Damaged files (flipped bits, layer files cut short
//! or missing) are in `bitflips.rs`.

mod common;

use std::ops::Bound;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratakv::{
    ErrorKind, LayerKind, Lsn, MAX_KEY_LEN_LIMIT, SimpleRedo, Store, StoreOptions, Value,
};

use common::fixture::{
    SEEDED_KEYS, WAIT, assert_err, changes, observe, opts, rt, seeded, timeline_dir, tree,
};

fn lsn_text(l: u64) -> String {
    Lsn(l).to_string()
}

// ---------------------------------------------------------------------------------------------
// Puts and finish_write refuse bad input and change nothing
// ---------------------------------------------------------------------------------------------

#[test]
fn put_with_an_empty_key_is_refused_and_changes_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;

        assert_err(
            w.put(b"", Lsn(0x30), Value::image("x")),
            ErrorKind::InvalidArgument,
            &["empty key", &lsn_text(0x30)],
        );

        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
        w.put(b"page/new", Lsn(0x30), Value::image("n")).unwrap();
        w.finish_write(Lsn(0x30)).unwrap();
        assert_eq!(tl.get(b"page/new", Lsn(0x30)).await.unwrap().unwrap(), "n");
        assert_eq!(
            tl.scan::<&[u8]>(.., Lsn(0x30)).await.unwrap().len(),
            3,
            "no empty key appeared"
        );
    });
}

#[test]
fn put_with_a_key_over_max_key_len_is_refused_and_one_at_the_limit_is_accepted() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path()).max_key_len(32)).await;
        let before = observe(&tl, &SEEDED_KEYS).await;
        let long = [b'k'; 33];

        assert_err(
            w.put(&long, Lsn(0x30), Value::image("x")),
            ErrorKind::InvalidArgument,
            &["kkkkkkkk", &lsn_text(0x30), "33", "32"],
        );

        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
        let at_limit = [b'k'; 32];
        w.put(&at_limit, Lsn(0x30), Value::image("max")).unwrap();
        w.finish_write(Lsn(0x30)).unwrap();
        assert_eq!(tl.get(&at_limit, Lsn(0x30)).await.unwrap().unwrap(), "max");
        assert_eq!(tl.get(&long, Lsn(0x30)).await.unwrap(), None);
        tl.flush().await.unwrap();
        assert_eq!(tl.get(&at_limit, Lsn(0x30)).await.unwrap().unwrap(), "max");
    });
}

#[test]
fn put_with_a_value_over_max_value_len_is_refused_and_one_at_the_limit_is_accepted() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path()).max_value_len(100)).await;
        let before = observe(&tl, &SEEDED_KEYS).await;

        assert_err(
            w.put(b"page/new", Lsn(0x30), Value::image(vec![7u8; 101])),
            ErrorKind::InvalidArgument,
            &["page/new", &lsn_text(0x30), "101", "100"],
        );
        // A delta record counts as the value; SimpleRedo::set adds one op byte.
        assert_err(
            w.put(
                b"page/a",
                Lsn(0x30),
                Value::delta(SimpleRedo::set(&[7u8; 100])),
            ),
            ErrorKind::InvalidArgument,
            &["page/a", &lsn_text(0x30)],
        );

        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
        w.put(b"page/new", Lsn(0x30), Value::image(vec![7u8; 100]))
            .unwrap();
        w.put(
            b"page/a",
            Lsn(0x30),
            Value::delta(SimpleRedo::set(&[8u8; 99])),
        )
        .unwrap();
        w.put(b"page/c", Lsn(0x30), Value::Tombstone).unwrap();
        w.finish_write(Lsn(0x30)).unwrap();
        assert_eq!(
            tl.get(b"page/new", Lsn(0x30)).await.unwrap().unwrap(),
            vec![7u8; 100]
        );
        assert_eq!(
            tl.get(b"page/a", Lsn(0x30)).await.unwrap().unwrap(),
            vec![8u8; 99]
        );
        assert_eq!(tl.get(b"page/c", Lsn(0x30)).await.unwrap(), None);
    });
}

#[test]
fn put_at_or_below_last_record_lsn_is_refused_and_changes_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;

        for lsn in [0x28, 0x27, 0x10, 0] {
            // A new key, an existing key at an LSN it already has, and one it does not.
            for key in [&b"page/new"[..], b"page/a", b"page/b"] {
                let e = assert_err(
                    w.put(key, Lsn(lsn), Value::image("late")),
                    ErrorKind::InvalidArgument,
                    &[&lsn_text(lsn)],
                );
                assert!(
                    e.to_string().contains(std::str::from_utf8(key).unwrap()),
                    "{e}"
                );
                assert!(
                    e.to_string().contains(&lsn_text(0x28)),
                    "names last_record_lsn: {e}"
                );
            }
        }

        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
        w.put(b"page/new", Lsn(0x29), Value::image("on time"))
            .unwrap();
        w.finish_write(Lsn(0x29)).unwrap();
        assert_eq!(
            tl.get(b"page/new", Lsn(0x29)).await.unwrap().unwrap(),
            "on time"
        );
        assert_eq!(tl.get(b"page/new", Lsn(0x28)).await.unwrap(), None);
    });
}

#[test]
fn put_below_an_earlier_pending_put_is_refused_and_the_same_lsn_is_still_accepted() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;
        w.put(b"page/a", Lsn(0x40), Value::image("a40")).unwrap();

        assert_err(
            w.put(b"page/new", Lsn(0x3f), Value::image("back")),
            ErrorKind::InvalidArgument,
            &["page/new", &lsn_text(0x3f), &lsn_text(0x40)],
        );

        assert_eq!(
            observe(&tl, &SEEDED_KEYS).await,
            before,
            "pending puts are not visible"
        );
        w.put(b"page/new", Lsn(0x40), Value::image("same lsn"))
            .unwrap();
        w.finish_write(Lsn(0x40)).unwrap();
        assert_eq!(
            tl.get(b"page/new", Lsn(0x40)).await.unwrap().unwrap(),
            "same lsn"
        );
        assert_eq!(
            tl.get(b"page/new", Lsn(0x3f)).await.unwrap(),
            None,
            "the refused put at 0x3f left nothing"
        );
        assert_eq!(tl.get(b"page/a", Lsn(0x40)).await.unwrap().unwrap(), "a40");
    });
}

#[test]
fn put_of_a_key_twice_at_one_lsn_is_refused_and_the_first_value_stays() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;
        w.put(b"page/a", Lsn(0x30), Value::image("first")).unwrap();

        assert_err(
            w.put(b"page/a", Lsn(0x30), Value::image("second")),
            ErrorKind::InvalidArgument,
            &["page/a", &lsn_text(0x30)],
        );
        assert_err(
            w.put(b"page/a", Lsn(0x30), Value::Tombstone),
            ErrorKind::InvalidArgument,
            &["page/a", &lsn_text(0x30)],
        );

        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
        w.put(b"page/b", Lsn(0x30), Value::image("other key, same lsn"))
            .unwrap();
        w.finish_write(Lsn(0x30)).unwrap();
        assert_eq!(
            tl.get(b"page/a", Lsn(0x30)).await.unwrap().unwrap(),
            "first"
        );
        assert_eq!(
            tl.get(b"page/b", Lsn(0x30)).await.unwrap().unwrap(),
            "other key, same lsn"
        );
    });
}

#[test]
fn put_of_a_pending_key_and_lsn_again_after_a_flush_moved_it_is_refused() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path())).await;
        // Given a pending put that a flush carries over into the next in-memory layer,
        w.put(b"page/a", Lsn(0x30), Value::image("first")).unwrap();
        tl.flush().await.unwrap();
        let before = observe(&tl, &SEEDED_KEYS).await;

        // when the same (key, lsn) comes again, then it is still refused.
        assert_err(
            w.put(b"page/a", Lsn(0x30), Value::image("second")),
            ErrorKind::InvalidArgument,
            &["page/a", &lsn_text(0x30)],
        );

        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
        w.finish_write(Lsn(0x30)).unwrap();
        assert_eq!(
            tl.get(b"page/a", Lsn(0x30)).await.unwrap().unwrap(),
            "first"
        );
        assert_eq!(tl.get(b"page/a", Lsn(0x2f)).await.unwrap().unwrap(), "a2");
    });
}

#[test]
fn finish_write_below_last_record_lsn_is_refused_and_changes_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;

        for lsn in [0x27, 0x10, 0] {
            assert_err(
                w.finish_write(Lsn(lsn)),
                ErrorKind::InvalidArgument,
                &[&lsn_text(lsn), &lsn_text(0x28)],
            );
        }
        w.finish_write(Lsn(0x28)).unwrap(); // at last_record_lsn: nothing to do

        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
        assert_eq!(tl.last_record_lsn(), Lsn(0x28));
        w.put(b"page/new", Lsn(0x29), Value::image("n")).unwrap();
        w.finish_write(Lsn(0x29)).unwrap();
        assert_eq!(tl.get(b"page/new", Lsn(0x29)).await.unwrap().unwrap(), "n");
    });
}

#[test]
fn finish_write_below_a_pending_put_is_refused_and_publishes_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;
        w.put(b"page/new", Lsn(0x30), Value::image("n30")).unwrap();
        w.put(b"page/new", Lsn(0x38), Value::image("n38")).unwrap();

        for lsn in [0x37, 0x30, 0x29] {
            assert_err(
                w.finish_write(Lsn(lsn)),
                ErrorKind::InvalidArgument,
                &[&lsn_text(lsn), &lsn_text(0x38)],
            );
        }

        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
        assert_eq!(tl.last_record_lsn(), Lsn(0x28));
        w.finish_write(Lsn(0x38)).unwrap();
        assert_eq!(
            tl.get(b"page/new", Lsn(0x30)).await.unwrap().unwrap(),
            "n30"
        );
        assert_eq!(
            tl.get(b"page/new", Lsn(0x38)).await.unwrap().unwrap(),
            "n38"
        );
    });
}

#[test]
fn refused_puts_leave_nothing_behind_for_a_crash_to_replay() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (store, tl, mut w) = seeded(opts(dir.path()).max_key_len(32).max_value_len(64)).await;
        // Given every kind of refused put around valid ones,
        w.put(b"page/a", Lsn(0x30), Value::image("a30")).unwrap();
        let refused = [
            w.put(b"page/a", Lsn(0x30), Value::image("duplicate")),
            w.put(b"page/b", Lsn(0x2f), Value::image("backwards")),
            w.put(b"page/b", Lsn(0x28), Value::image("at last_record_lsn")),
            w.put(b"", Lsn(0x30), Value::image("empty key")),
            w.put(&[b'k'; 33], Lsn(0x30), Value::image("long key")),
            w.put(b"page/b", Lsn(0x30), Value::image(vec![1u8; 65])),
        ];
        for r in refused {
            assert_err(r, ErrorKind::InvalidArgument, &[]);
        }
        w.put(b"page/b", Lsn(0x30), Value::image("b30")).unwrap();
        w.finish_write(Lsn(0x30)).unwrap();
        let before = observe(&tl, &SEEDED_KEYS).await;
        // when the process dies and the store reopens,
        drop((w, tl, store));
        let store = Store::open(opts(dir.path()).max_key_len(32).max_value_len(64))
            .await
            .unwrap();
        // then it reads exactly what it did: none of the refused puts came back.
        let tl = store.timeline("main").unwrap();
        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
        assert_eq!(tl.get(b"page/a", Lsn(0x30)).await.unwrap().unwrap(), "a30");
        assert_eq!(tl.get(b"page/b", Lsn(0x2f)).await.unwrap(), None);
        assert_eq!(tl.get(&[b'k'; 33], Lsn(0x30)).await.unwrap(), None);
    });
}

#[test]
fn delta_without_a_base_or_over_a_tombstone_is_a_redo_error_naming_the_key() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path())).await;
        w.put(
            b"page/nobase",
            Lsn(0x30),
            Value::delta(SimpleRedo::append(b"x")),
        )
        .unwrap();
        w.put(b"page/b", Lsn(0x30), Value::delta(SimpleRedo::append(b"x")))
            .unwrap(); // over the tombstone
        w.put(b"page/junk", Lsn(0x30), Value::image("base"))
            .unwrap();
        w.put(
            b"page/junk",
            Lsn(0x31),
            Value::delta(Bytes::from_static(&[0x7f, 1, 2])),
        )
        .unwrap(); // unknown op
        w.finish_write(Lsn(0x31)).unwrap();

        for flushed in [false, true] {
            if flushed {
                tl.flush().await.unwrap();
            }
            assert_err(
                tl.get(b"page/nobase", Lsn(0x30)).await,
                ErrorKind::Redo,
                &["page/nobase"],
            );
            assert_err(
                tl.get(b"page/b", Lsn(0x30)).await,
                ErrorKind::Redo,
                &["page/b"],
            );
            assert_err(
                tl.get(b"page/junk", Lsn(0x31)).await,
                ErrorKind::Redo,
                &["page/junk", &lsn_text(0x31)],
            );
            assert_eq!(
                tl.get(b"page/junk", Lsn(0x30)).await.unwrap().unwrap(),
                "base"
            );
            assert_eq!(tl.get(b"page/b", Lsn(0x2f)).await.unwrap(), None);
            assert_err(
                tl.get_many(&[&b"page/a"[..], b"page/nobase"], Lsn(0x30))
                    .await,
                ErrorKind::Redo,
                &["page/nobase"],
            );
            assert_err(tl.scan::<&[u8]>(.., Lsn(0x30)).await, ErrorKind::Redo, &[]);
            // A scan that avoids the broken keys works.
            let ok = tl
                .scan(&b"page/a"[..]..&b"page/b"[..], Lsn(0x31))
                .await
                .unwrap();
            assert_eq!(
                ok,
                vec![(Bytes::from_static(b"page/a"), Bytes::from_static(b"a2"))]
            );
        }
        // An image layer cannot be built over a key that does not reconstruct.
        assert_err(tl.create_image_layer().await, ErrorKind::Redo, &[]);
        assert!(tl.layers().iter().all(|l| l.kind == LayerKind::Delta));
    });
}

#[test]
fn image_layer_of_an_empty_timeline_is_refused() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl = store.create_timeline("main").await.unwrap();
        assert_err(
            tl.create_image_layer().await,
            ErrorKind::InvalidArgument,
            &["main"],
        );
        assert!(tl.layers().is_empty());
    });
}

// ---------------------------------------------------------------------------------------------
// Opening, locking, timelines, writers
// ---------------------------------------------------------------------------------------------

#[test]
fn open_of_a_non_empty_directory_that_is_not_a_store_is_refused_and_leaves_it_untouched() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"my notes").unwrap();
        std::fs::create_dir_all(dir.path().join("timelines/x")).unwrap();
        std::fs::write(dir.path().join("timelines/x/manifest"), b"not one").unwrap();
        let before = tree(dir.path());

        assert_err(
            Store::open(opts(dir.path())).await,
            ErrorKind::InvalidArgument,
            &[&dir.path().display().to_string()],
        );

        assert_eq!(changes(&before, &tree(dir.path())), Vec::<String>::new());
    });
}

#[test]
fn open_of_a_path_that_is_a_file_is_refused() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store");
        std::fs::write(&file, b"data").unwrap();
        assert_err(
            Store::open(opts(&file)).await,
            ErrorKind::InvalidArgument,
            &["not a directory"],
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
    });
}

#[test]
fn open_with_invalid_options_is_refused_and_creates_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let bad: Vec<(&str, StoreOptions)> = vec![
            ("max_key_len", opts(&path).max_key_len(0)),
            (
                "max_key_len",
                opts(&path).max_key_len(MAX_KEY_LEN_LIMIT + 1),
            ),
            ("max_value_len", opts(&path).max_value_len(usize::MAX)),
            ("block_size", opts(&path).block_size(511)),
            ("block_size", opts(&path).block_size((16 << 20) + 1)),
            ("zstd", opts(&path).zstd_level(Some(10_000))),
            ("max_frozen_layers", opts(&path).max_frozen_layers(0)),
            ("freeze_lsn_distance", opts(&path).freeze_lsn_distance(0)),
        ];
        for (what, o) in bad {
            assert_err(Store::open(o).await, ErrorKind::InvalidArgument, &[what]);
            assert!(!path.exists(), "{what}: the store directory was created");
        }
        Store::open(opts(&path).block_size(512).max_key_len(MAX_KEY_LEN_LIMIT))
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
    });
}

#[test]
fn second_open_of_an_open_store_is_locked_and_the_store_opens_again_once_closed() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (store, tl, mut w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;
        let files_before = tree(dir.path());

        assert_err(
            Store::open(opts(dir.path())).await,
            ErrorKind::Locked,
            &[&dir.path().display().to_string()],
        );

        assert_eq!(
            changes(&files_before, &tree(dir.path())),
            Vec::<String>::new(),
            "the refused open touched nothing"
        );
        assert_eq!(
            observe(&tl, &SEEDED_KEYS).await,
            before,
            "the first store is unaffected"
        );
        w.put(b"page/new", Lsn(0x30), Value::image("n")).unwrap();
        w.finish_write(Lsn(0x30)).unwrap();
        drop(w);
        store.close().await.unwrap();

        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl = store.timeline("main").unwrap();
        assert_eq!(tl.get(b"page/new", Lsn(0x30)).await.unwrap().unwrap(), "n");
        // Dropping without close releases the lock too.
        drop(tl);
        drop(store);
        Store::open(opts(dir.path()))
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
    });
}

#[test]
fn creating_a_timeline_twice_is_already_exists_and_keeps_the_first() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (store, tl, _w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;

        assert_err(
            store.create_timeline("main").await,
            ErrorKind::AlreadyExists,
            &["main"],
        );

        assert_eq!(store.timelines().len(), 1);
        assert_eq!(
            observe(&store.timeline("main").unwrap(), &SEEDED_KEYS).await,
            before
        );
        drop(_w);
        store.close().await.unwrap();
        let store = Store::open(opts(dir.path())).await.unwrap();
        assert_err(
            store.create_timeline("main").await,
            ErrorKind::AlreadyExists,
            &["main"],
        );
        assert_eq!(
            observe(&store.timeline("main").unwrap(), &SEEDED_KEYS).await,
            before
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("timelines"))
                .unwrap()
                .count(),
            1,
            "no directory for the refused timeline"
        );
    });
}

#[test]
fn creating_a_timeline_with_a_bad_name_is_refused() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(opts(dir.path())).await.unwrap();
        for name in [
            String::new(),
            "x".repeat(256),
            "a\nb".to_string(),
            "tab\there".to_string(),
        ] {
            assert_err(
                store.create_timeline(&name).await,
                ErrorKind::InvalidArgument,
                &[],
            );
        }
        assert!(store.timelines().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("timelines"))
                .unwrap()
                .count(),
            0
        );
        store.create_timeline(&"x".repeat(255)).await.unwrap();
        store
            .create_timeline("with/slash and ünïcode")
            .await
            .unwrap();
        store.close().await.unwrap();
        let store = Store::open(opts(dir.path())).await.unwrap();
        store.timeline("with/slash and ünïcode").unwrap();
        store.timeline(&"x".repeat(255)).unwrap();
    });
}

#[test]
fn unknown_timeline_is_not_found() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(opts(dir.path())).await.unwrap();
        store.create_timeline("main").await.unwrap();
        assert_err(store.timeline("mian"), ErrorKind::NotFound, &["mian"]);
        assert_err(store.timeline(""), ErrorKind::NotFound, &[]);
    });
}

#[test]
fn second_writer_while_one_is_alive_is_refused_and_allowed_once_the_first_is_dropped() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (store, tl, mut w) = seeded(opts(dir.path())).await;
        w.put(b"page/new", Lsn(0x30), Value::image("pending"))
            .unwrap();

        assert_err(tl.writer(), ErrorKind::InvalidArgument, &["main"]);
        assert_err(
            store.timeline("main").unwrap().writer(),
            ErrorKind::InvalidArgument,
            &["main"],
        );

        // The first writer still works; the refused one changed nothing.
        w.put(b"page/new2", Lsn(0x30), Value::image("pending too"))
            .unwrap();
        drop(w);
        let mut w2 = tl.writer().unwrap();
        // Puts left pending by the first writer stay pending for the next one.
        assert_err(
            w2.put(b"page/x", Lsn(0x2f), Value::image("x")),
            ErrorKind::InvalidArgument,
            &[],
        );
        assert_err(
            w2.put(b"page/new", Lsn(0x30), Value::image("again")),
            ErrorKind::InvalidArgument,
            &[],
        );
        w2.finish_write(Lsn(0x30)).unwrap();
        assert_eq!(
            tl.get(b"page/new", Lsn(0x30)).await.unwrap().unwrap(),
            "pending"
        );
        assert_eq!(
            tl.get(b"page/new2", Lsn(0x30)).await.unwrap().unwrap(),
            "pending too"
        );
        assert_err(tl.writer(), ErrorKind::InvalidArgument, &[]);
    });
}

// ---------------------------------------------------------------------------------------------
// Waiting for LSNs
// ---------------------------------------------------------------------------------------------

#[test]
fn read_above_last_record_lsn_times_out_with_lsn_timeout() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) = seeded(opts(dir.path())).await;
        w.put(b"page/a", Lsn(0x30), Value::image("pending"))
            .unwrap(); // written, not published

        let t0 = Instant::now();
        assert_err(
            tl.get(b"page/a", Lsn(0x29)).await,
            ErrorKind::LsnTimeout,
            &[&lsn_text(0x29), &lsn_text(0x28)],
        );
        assert!(t0.elapsed() >= WAIT, "gave up after {:?}", t0.elapsed());
        assert_err(
            tl.get(b"page/a", Lsn(0x30)).await,
            ErrorKind::LsnTimeout,
            &[&lsn_text(0x30)],
        );
        assert_err(
            tl.get_many(&[b"page/a"], Lsn(0x30)).await,
            ErrorKind::LsnTimeout,
            &[&lsn_text(0x30)],
        );
        assert_err(
            tl.scan::<&[u8]>(.., Lsn(0x30)).await,
            ErrorKind::LsnTimeout,
            &[&lsn_text(0x30)],
        );
        assert_err(
            tl.get(b"page/a", Lsn::MAX).await,
            ErrorKind::LsnTimeout,
            &[],
        );

        assert_eq!(tl.get(b"page/a", Lsn(0x28)).await.unwrap().unwrap(), "a2");
        w.finish_write(Lsn(0x30)).unwrap();
        assert_eq!(
            tl.get(b"page/a", Lsn(0x30)).await.unwrap().unwrap(),
            "pending"
        );
    });
}

#[test]
fn read_waiting_for_an_lsn_is_woken_by_finish_write_from_another_task() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, mut w) =
            seeded(opts(dir.path()).wait_lsn_timeout(Duration::from_secs(20))).await;

        let reader = {
            let tl = tl.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                let got = tl.get(b"page/a", Lsn(0x40)).await;
                (got, t0.elapsed())
            })
        };
        let scanner = {
            let tl = tl.clone();
            tokio::spawn(async move { tl.scan::<&[u8]>(.., Lsn(0x40)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !reader.is_finished() && !scanner.is_finished(),
            "the reads did not wait"
        );
        w.put(b"page/a", Lsn(0x40), Value::image("a40")).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "a put alone must not wake the read");

        let writer = tokio::spawn(async move {
            w.finish_write(Lsn(0x40)).unwrap();
            w
        });
        let (got, waited) = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("reader woken")
            .unwrap();
        assert_eq!(got.unwrap().unwrap(), "a40");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        let scan = tokio::time::timeout(Duration::from_secs(10), scanner)
            .await
            .expect("scanner woken")
            .unwrap()
            .unwrap();
        assert_eq!(scan.len(), 2, "{scan:?}");
        writer.await.unwrap();
    });
}

/// The writer wakes waiters only while one is subscribed: a read that starts waiting around
/// the moment its LSN is published must still return at once, never at the timeout. The writer
/// commits each LSN as soon as a reader on its own thread says it is about to wait for it, the
/// reader starting its read at a random point of the writer's commit. It fails if commits stop
/// waking subscribed readers; the narrowest race (a commit between a reader's check and its
/// subscription, which the fences in `publish_commit` and `wait_for_lsn` close) lasts tens of
/// nanoseconds, and this test did not catch a waiter deliberately made to trust the channel's
/// possibly stale value instead of `last_record_lsn`.
#[test]
fn reads_starting_to_wait_as_the_lsn_is_published_are_never_missed() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open_blocking(opts(dir.path()).wait_lsn_timeout(Duration::from_secs(5))).unwrap();
    let tl = rt().block_on(store.create_timeline("main")).unwrap();
    let mut w = tl.writer().unwrap();
    const COMMITS: u64 = 20_000;
    let want = AtomicU64::new(0);
    let slowest = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut slowest = Duration::ZERO;
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for n in 1..=COMMITS {
                want.store(n, Ordering::SeqCst);
                // The writer commits a microsecond or so after it sees this: start reading at a
                // random point of it, so that the reader's check-then-subscribe meets it.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let pause = Duration::from_nanos(x % 20_000);
                let t0 = Instant::now();
                while t0.elapsed() < pause {
                    std::hint::spin_loop();
                }
                let t0 = Instant::now();
                let got = tl.get_blocking(b"k", Lsn(n)).unwrap();
                slowest = slowest.max(t0.elapsed());
                assert_eq!(got.as_deref(), Some(&n.to_be_bytes()[..]), "at LSN {n}");
            }
            slowest
        });
        'writing: for n in 1..=COMMITS {
            w.put(b"k", Lsn(n), Value::image(n.to_be_bytes().to_vec()))
                .unwrap();
            while want.load(Ordering::SeqCst) < n {
                if reader.is_finished() {
                    break 'writing;
                }
                std::hint::spin_loop();
            }
            w.finish_write(Lsn(n)).unwrap();
        }
        reader.join().unwrap()
    });
    // A missed wake-up waits the whole 5 s timeout and fails with `LsnNotYetAvailable`.
    assert!(slowest < Duration::from_secs(4), "{slowest:?}");
}

// ---------------------------------------------------------------------------------------------
// Closing and reopening
// ---------------------------------------------------------------------------------------------

#[test]
fn reopen_after_close_keeps_every_timeline_and_its_data() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let o = || opts(dir.path()).block_size(512).freeze_bytes(4 << 10);
        let store = Store::open(o()).await.unwrap();
        let names = ["main", "dev", "pr-123"];
        for (t, name) in names.iter().enumerate() {
            let tl = store.create_timeline(name).await.unwrap();
            let mut w = tl.writer().unwrap();
            for i in 1..=300u64 {
                let key = format!("{name}/key{:03}", i % 37);
                let value = match i % 10 {
                    _ if i <= 37 => Value::image(format!("{name}:{i}")),
                    0 => Value::delta(SimpleRedo::append(format!("+{i}").as_bytes())),
                    5 => Value::init_delta(SimpleRedo::set(format!("init{i}").as_bytes())),
                    4 if t == 1 => Value::Tombstone, // later deltas on it fail to reconstruct
                    _ => Value::image(format!("{name}:{i}")),
                };
                w.put(key.as_bytes(), Lsn(i * 2), value).unwrap();
                if i % 3 == 0 {
                    w.finish_write(Lsn(i * 2)).unwrap();
                }
                if t == 2 && i == 150 {
                    tl.create_image_layer().await.unwrap();
                }
            }
            w.finish_write(Lsn(600 + t as u64)).unwrap();
            if t == 0 {
                tl.flush().await.unwrap(); // one timeline fully on disk before close
            }
        }
        let keys: Vec<Vec<u8>> = names
            .iter()
            .flat_map(|n| (0..37).map(move |k| format!("{n}/key{k:03}").into_bytes()))
            .collect();
        let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let mut before = Vec::new();
        for name in names {
            let tl = store.timeline(name).unwrap();
            before.push((tl.id(), observe(&tl, &keys).await));
        }
        store.close().await.unwrap();

        let store = Store::open(o()).await.unwrap();
        let mut listed: Vec<String> = store
            .timelines()
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        listed.sort();
        let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        want.sort();
        assert_eq!(listed, want);
        for (name, (id, obs)) in names.iter().zip(before) {
            let tl = store.timeline(name).unwrap();
            assert_eq!(tl.id(), id);
            assert_eq!(tl.disk_consistent_lsn(), tl.last_record_lsn(), "{name}");
            // Its history is read from layer files up to the last LSN. (Not a count of layers:
            // compaction may merge them at any time, before the close or after the open.)
            let newest = tl.layers().iter().map(|l| l.lsn_range.end).max();
            assert!(newest > Some(tl.last_record_lsn()), "{name}: {newest:?}");
            assert_eq!(observe(&tl, &keys).await, obs, "{name}");
        }
        // And the reopened store takes writes above what it had.
        let tl = store.timeline("dev").unwrap();
        let mut w = tl.writer().unwrap();
        assert_err(
            w.put(b"dev/key000", Lsn(601), Value::image("x")),
            ErrorKind::InvalidArgument,
            &[],
        );
        w.put(b"dev/key000", Lsn(602), Value::image("after reopen"))
            .unwrap();
        w.finish_write(Lsn(602)).unwrap();
        assert_eq!(
            tl.get(b"dev/key000", Lsn(602)).await.unwrap().unwrap(),
            "after reopen"
        );
    });
}

#[test]
fn timeline_handles_fail_with_closed_once_the_store_is_closed() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (store, tl, mut w) = seeded(opts(dir.path())).await;
        store.close().await.unwrap();

        assert_err(tl.get(b"page/a", Lsn(0x28)).await, ErrorKind::Closed, &[]);
        assert_err(
            tl.scan::<&[u8]>(.., Lsn(0x28)).await,
            ErrorKind::Closed,
            &[],
        );
        assert_err(
            w.put(b"page/a", Lsn(0x30), Value::image("late")),
            ErrorKind::Closed,
            &[],
        );
        assert_err(w.finish_write(Lsn(0x30)), ErrorKind::Closed, &[]);
        assert_err(tl.flush().await, ErrorKind::Closed, &[]);
        drop(w);
        assert_err(tl.writer(), ErrorKind::Closed, &[]);

        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl = store.timeline("main").unwrap();
        assert_eq!(tl.last_record_lsn(), Lsn(0x28));
        assert_eq!(
            tl.get(b"page/a", Lsn(0x30)).await.map_err(|e| e.kind()),
            Err(ErrorKind::LsnTimeout)
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Stray files
// ---------------------------------------------------------------------------------------------

#[test]
fn stray_files_in_a_timeline_directory_are_swept_at_open() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (store, tl, w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;
        let tl_dir = timeline_dir(dir.path(), &tl);
        drop((tl, w));
        store.close().await.unwrap();
        let kept = tree(&tl_dir);
        let strays = [
            tl_dir.join("junk.layer"),
            tl_dir.join("0000000000000063-d-0000000000000001-0000000000000002.layer"),
            tl_dir.join("0000000000000064-i-0000000000000030-0000000000000031.layer.tmp"),
            tl_dir.join("manifest.tmp"),
            tl_dir.join("notes"),
        ];
        for s in &strays {
            std::fs::write(s, b"left over from a crash").unwrap();
        }
        // A timeline directory the catalog does not list (a creation that crashed).
        let orphan = dir
            .path()
            .join("timelines")
            .join("0123456789abcdef0123456789abcdef");
        std::fs::create_dir(&orphan).unwrap();
        std::fs::write(orphan.join("manifest"), b"x").unwrap();

        let store = Store::open(opts(dir.path())).await.unwrap();

        for s in &strays {
            assert!(!s.exists(), "{} was not swept", s.display());
        }
        assert!(
            !orphan.exists(),
            "the orphan timeline directory was not swept"
        );
        assert_eq!(
            tree(&tl_dir),
            kept,
            "files the manifest names are untouched"
        );
        let tl = store.timeline("main").unwrap();
        assert_eq!(observe(&tl, &SEEDED_KEYS).await, before);
    });
}

// ---------------------------------------------------------------------------------------------
// Bugs found while writing these tests, fixed since: they stay as regression tests
// ---------------------------------------------------------------------------------------------

#[test]
fn uncommitted_put_discarded_at_open_stays_discarded_after_later_commits_and_crashes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // Given puts that were never committed when the store closed,
        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl = store.create_timeline("main").await.unwrap();
        let mut w = tl.writer().unwrap();
        w.put(b"page/a", Lsn(1), Value::image("never acknowledged"))
            .unwrap();
        w.put(b"page/b", Lsn(1), Value::image("never acknowledged"))
            .unwrap();
        drop((w, tl));
        store.close().await.unwrap(); // close writes the uncommitted puts to the log

        // when the reopened store commits that LSN with other data, and crashes again,
        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl = store.timeline("main").unwrap();
        assert_eq!(tl.last_record_lsn(), Lsn(0));
        assert_eq!(tl.get(b"page/a", Lsn(0)).await.unwrap(), None);
        let mut w = tl.writer().unwrap();
        w.put(b"page/a", Lsn(1), Value::image("acknowledged"))
            .unwrap();
        w.finish_write(Lsn(1)).unwrap();
        assert_eq!(
            tl.get(b"page/a", Lsn(1)).await.unwrap().unwrap(),
            "acknowledged"
        );
        assert_eq!(tl.get(b"page/b", Lsn(1)).await.unwrap(), None);
        drop((w, tl, store)); // a crash

        // then the store still reads what was acknowledged, and only that.
        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl = store.timeline("main").unwrap();
        assert_eq!(tl.last_record_lsn(), Lsn(1));
        assert_eq!(
            tl.get(b"page/a", Lsn(1)).await.unwrap().unwrap(),
            "acknowledged"
        );
        assert_eq!(tl.get(b"page/b", Lsn(1)).await.unwrap(), None);
    });
}

#[test]
fn scan_with_inverted_bounds_returns_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, tl, _w) = seeded(opts(dir.path())).await;
        // page/a and page/c have versions in the open in-memory layer at 0x28.
        let r = tl.scan(&b"page/c"[..]..&b"page/a"[..], Lsn(0x28)).await;
        assert!(
            matches!(&r, Ok(v) if v.is_empty())
                || r.as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::InvalidArgument),
            "{r:?}"
        );
        let r = tl
            .scan(
                (
                    Bound::Excluded(b"page/a".to_vec()),
                    Bound::Excluded(b"page/a".to_vec()),
                ),
                Lsn(0x28),
            )
            .await;
        assert!(
            matches!(&r, Ok(v) if v.is_empty())
                || r.as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::InvalidArgument),
            "{r:?}"
        );
    });
}

#[test]
fn key_at_the_max_key_len_limit_flushes_and_reads_back() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(opts(dir.path()).max_key_len(MAX_KEY_LEN_LIMIT))
            .await
            .unwrap();
        let tl = store.create_timeline("main").await.unwrap();
        let mut w = tl.writer().unwrap();
        let key = vec![b'k'; MAX_KEY_LEN_LIMIT];
        w.put(&key, Lsn(1), Value::image("v")).unwrap();
        w.finish_write(Lsn(1)).unwrap();
        let flushed = tokio::time::timeout(Duration::from_secs(5), tl.flush()).await;
        assert!(matches!(flushed, Ok(Ok(_))), "flush: {flushed:?}");
        assert_eq!(tl.get(&key, Lsn(1)).await.unwrap().unwrap(), "v");
    });
}

#[test]
fn put_at_lsn_max_is_refused_or_readable() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl = store.create_timeline("main").await.unwrap();
        let mut w = tl.writer().unwrap();
        if let Err(e) = w.put(b"k", Lsn::MAX, Value::image("v")) {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            return;
        }
        w.finish_write(Lsn::MAX).unwrap();
        assert_eq!(
            tl.get(b"k", Lsn::MAX).await.unwrap().map(|b| b.to_vec()),
            Some(b"v".to_vec())
        );
        let flushed = tokio::time::timeout(Duration::from_secs(5), tl.flush()).await;
        assert!(matches!(flushed, Ok(Ok(Lsn::MAX))), "flush: {flushed:?}");
    });
}

#[test]
fn stray_entries_that_are_not_plain_files_do_not_prevent_open() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (store, tl, w) = seeded(opts(dir.path())).await;
        let before = observe(&tl, &SEEDED_KEYS).await;
        let tl_dir = timeline_dir(dir.path(), &tl);
        drop((tl, w));
        store.close().await.unwrap();
        std::fs::create_dir(tl_dir.join("stray.layer.d")).unwrap();
        std::fs::write(dir.path().join("timelines").join("stray-file"), b"x").unwrap();

        let store = Store::open(opts(dir.path())).await.unwrap();
        assert_eq!(
            observe(&store.timeline("main").unwrap(), &SEEDED_KEYS).await,
            before
        );
    });
}

#[test]
fn store_whose_creation_was_interrupted_opens() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("LOCK"), b"").unwrap();
        std::fs::create_dir(dir.path().join("timelines")).unwrap();
        std::fs::write(dir.path().join("CATALOG.tmp"), b"").unwrap();

        let store = Store::open(opts(dir.path())).await.unwrap();
        store.create_timeline("main").await.unwrap();
    });
}
