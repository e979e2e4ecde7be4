use super::*;

#[test]
fn scratch() {
    for t in [
        r#"{"machines":[{"name":"a","slave-id":3}]}"#,
        r#"{"machines":[{"name":"a","registers":[{"name":"x","type":"int16","measurement":"m","bogus":1}]}]}"#,
        r#"{"machines":[{"name":"a",}]}"#,
        r#"{"machines":[{"name":"a"}"#,
        r#"{"machines":[{"name":5}]}"#,
        r#"{"heartbeat_s":"x"}"#,
        r#"{"bogus":1}"#,
        r#"not json"#,
        r#""#,
        r#"{"machines":[{"name":"a","slave_id":300}]}"#,
        r#"{"profiles":{"p":{"registers":[{"name":"x"}]}}}"#,
    ] {
        match parse(t) {
            Ok(_) => println!("OK {t}"),
            Err(e) => println!("{t}\n   -> {:?}", e.0),
        }
    }
}
