//! Tests of the TCP line source.

use super::*;

fn ev(created_us: u64, seq: u64, key: u64) -> TcpEvent {
    TcpEvent {
        created_us,
        seq,
        key,
    }
}

/// Feeds `chunks` one read at a time (then end of stream) and returns
/// every line, parsed or refused, in order.
fn decode(max_line: usize, chunks: &[&[u8]]) -> Vec<Result<TcpEvent, MalformedLine>> {
    let mut d = LineDecoder::new(max_line);
    let mut out = Vec::new();
    for chunk in chunks {
        d.read_buf().extend_from_slice(chunk);
        out.extend(std::iter::from_fn(|| d.next_line()));
    }
    d.finish();
    out.extend(std::iter::from_fn(|| d.next_line()));
    out
}

fn refused(line: &str, error: ParseLineError) -> Result<TcpEvent, MalformedLine> {
    Err(MalformedLine {
        line: line.to_string(),
        error,
    })
}

#[test]
fn parses_good_lines() {
    assert_eq!(
        decode(100, &[b"1700000000000000,0,7\n1700000000000001,1,8\n"]),
        vec![
            Ok(ev(1_700_000_000_000_000, 0, 7)),
            Ok(ev(1_700_000_000_000_001, 1, 8))
        ]
    );
    assert_eq!(" 5 , 6 ,7 ".parse(), Ok(ev(5, 6, 7)));
    assert_eq!(ev(5, 6, 7).to_string(), "5,6,7");
}

#[test]
fn refuses_malformed_lines_and_keeps_going() {
    assert_eq!(
        decode(
            100,
            &[b"1,2\nx,2,3\n1,2,3,4\n1,-2,3\n\n18446744073709552,0,0\n4,5,6\n"]
        ),
        vec![
            refused("1,2", ParseLineError::FieldCount(2)),
            refused(
                "x,2,3",
                ParseLineError::BadField {
                    field: "created_us",
                    value: "x".into()
                }
            ),
            refused("1,2,3,4", ParseLineError::FieldCount(4)),
            refused(
                "1,-2,3",
                ParseLineError::BadField {
                    field: "seq",
                    value: "-2".into()
                }
            ),
            refused(
                "18446744073709552,0,0",
                ParseLineError::TimestampOutOfRange(18_446_744_073_709_552)
            ),
            Ok(ev(4, 5, 6)),
        ]
    );
    let out = decode(100, &[b"\xff,1,2\n"]);
    assert!(matches!(
        &out[..],
        [Err(MalformedLine {
            error: ParseLineError::NotUtf8,
            ..
        })]
    ));
}

#[test]
fn joins_a_line_split_across_reads() {
    assert_eq!(
        decode(100, &[b"10,1", b",2\n20", b",", b"3,4\n"]),
        vec![Ok(ev(10, 1, 2)), Ok(ev(20, 3, 4))]
    );
}

#[test]
fn strips_crlf_even_split_between_reads() {
    assert_eq!(
        decode(100, &[b"1,2,3\r\n4,5,6\r", b"\n\r\n"]),
        vec![Ok(ev(1, 2, 3)), Ok(ev(4, 5, 6))]
    );
}

#[test]
fn a_last_line_without_newline_counts_at_end_of_stream() {
    assert_eq!(
        decode(100, &[b"1,2,3\n4,5", b",6"]),
        vec![Ok(ev(1, 2, 3)), Ok(ev(4, 5, 6))]
    );
    assert_eq!(
        decode(100, &[b"1,2,3\n4,5"]),
        vec![
            Ok(ev(1, 2, 3)),
            refused("4,5", ParseLineError::FieldCount(2))
        ]
    );
}

#[test]
fn an_overlong_line_is_refused_once_and_skipped() {
    let out = decode(8, &[b"1,2,3\n123456", b"789,", b"0,0\n4,5,6\n"]);
    assert_eq!(
        out,
        vec![
            Ok(ev(1, 2, 3)),
            refused("123456789,", ParseLineError::TooLong(8)),
            Ok(ev(4, 5, 6)),
        ]
    );
    // Found whole within one read.
    assert_eq!(
        decode(5, &[b"1,2,3\n12345,6,7\n"]),
        vec![
            Ok(ev(1, 2, 3)),
            refused("12345,6,7", ParseLineError::TooLong(5))
        ]
    );
}

#[test]
fn the_buffer_holds_at_most_a_partial_line_and_a_read() {
    let mut d = LineDecoder::new(16);
    for _ in 0..1000 {
        d.read_buf().extend_from_slice(b"1,2,3\n4,5,6\n7,8");
        while d.next_line().is_some() {}
        assert!(d.buf.len() - d.start <= 16 + READ_CHUNK);
    }
    assert!(d.buf.capacity() <= 4 * READ_CHUNK, "{}", d.buf.capacity());
}

#[test]
fn addresses_accept_a_scheme_and_are_checked_at_open() {
    let ctx = SourceContext {
        name: "tcp".into(),
        instance: 0,
        parallelism: 1,
    };
    assert_eq!(
        TcpLineSource::new("tcp://127.0.0.1:9000").addr(),
        "127.0.0.1:9000"
    );
    let addr: std::net::SocketAddr = "[::1]:80".parse().unwrap();
    assert_eq!(TcpLineSource::new(addr).addr(), "[::1]:80");
    assert!(TcpLineSource::new("localhost:9000").open(&ctx).is_ok());
    let err = TcpLineSource::new("tcp://localhost")
        .open(&ctx)
        .unwrap_err();
    assert!(err.message.contains("`localhost`"), "{err}");
}

#[test]
fn the_malformed_log_is_shared_by_clones_and_bounded() {
    let a = TcpLineSource::new("127.0.0.1:1");
    let b = a.clone();
    for i in 0..20 {
        b.malformed.record(malformed(
            format!("bad {i}").as_bytes(),
            ParseLineError::FieldCount(1),
        ));
    }
    assert_eq!(a.malformed_count(), 20);
    let recent = a.recent_malformed();
    assert_eq!(recent.len(), MALFORMED_KEPT);
    assert_eq!(recent[0].line, "bad 4");
    assert_eq!(recent[MALFORMED_KEPT - 1].line, "bad 19");
}

#[test]
fn busy_polls_only_within_the_window_after_data() {
    let window = Duration::from_millis(50);
    let mut s = TcpLineSource::new("127.0.0.1:1").with_busy_poll(window);
    assert!(!s.busy_polling(), "no data yet: wait for readiness");
    s.last_data = Some(Instant::now());
    assert!(s.busy_polling(), "data just arrived: spin");
    s.last_data = Instant::now().checked_sub(2 * window);
    assert!(s.last_data.is_some());
    assert!(!s.busy_polling(), "quiet for longer than the window: wait");
    let mut off = TcpLineSource::new("127.0.0.1:1");
    off.last_data = Some(Instant::now());
    assert!(!off.busy_polling(), "no window: never spin");
    let clone = s.clone();
    assert_eq!(clone.busy_poll, window, "clones keep the window");
    assert!(clone.last_data.is_none(), "a clone has read nothing");
}
