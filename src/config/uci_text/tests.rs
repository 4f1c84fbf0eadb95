//! Tests of [`parse`](super::parse) as a whole: text in, sections out, the way uci itself
//! reads the file. They live in a file of their own because they outnumber the code: most
//! cases pin one quoting or error rule of uci's format.

use super::*;

fn single(text: &str) -> RawValue {
    RawValue::Single(text.to_string())
}

fn list(items: &[&str]) -> RawValue {
    RawValue::List(items.iter().map(|s| s.to_string()).collect())
}

/// The options of the only section in `text`.
fn options_of(text: &str) -> Vec<(String, RawValue)> {
    let config = parse(text).unwrap();
    assert_eq!(config.sections.len(), 1, "{config:?}");
    config.sections.into_iter().next().unwrap().options
}

/// The single value of option `v` in `config t 's'` followed by `body`.
fn value_of(body: &str) -> RawValue {
    let options = options_of(&format!("config t 's'\n{body}\n"));
    assert_eq!(options.len(), 1, "{options:?}");
    assert_eq!(options[0].0, "v");
    options[0].1.clone()
}

fn error_of(text: &str) -> String {
    let error = parse(text).unwrap_err();
    assert_eq!(error.exit_code(), 2);
    error.to_string()
}

#[test]
fn sections_keep_file_order_and_are_numbered_per_type() {
    let config = parse(
        "config interface 'wana'\n\
         config member 'm1'\n\
         config interface 'wanb'\n\
         config rule\n\
         config rule\n",
    )
    .unwrap();
    let summary: Vec<_> = config
        .sections
        .iter()
        .map(|s| (s.kind.as_str(), s.anonymous, s.type_index))
        .collect();
    assert_eq!(
        summary,
        [
            ("interface", false, 0),
            ("member", false, 0),
            ("interface", false, 1),
            ("rule", true, 0),
            ("rule", true, 1),
        ]
    );
    assert_eq!(config.sections[2].name, "wanb");
    assert_eq!(config.sections[4].label(), "@rule[1]");
}

#[test]
fn anonymous_sections_get_the_names_libuci_gives_them() {
    // What `uci show` of the kit's libuci prints for this file.
    let text = "config globals 'globals'\nconfig rule\n\toption proto 'tcp'\nconfig rule\n\toption proto 'udp'\nconfig policy\n";
    let names: Vec<_> = parse(text)
        .unwrap()
        .sections
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["globals", "cfg0292bd", "cfg0392bd", "cfg046ff5"]);
}

#[test]
fn option_overwrites_and_list_appends() {
    assert_eq!(value_of("option v 'a'\noption v 'b'"), single("b"));
    assert_eq!(value_of("list v 'a'\nlist v 'b'"), list(&["a", "b"]));
    assert_eq!(
        value_of("option v 'a'\nlist v 'b'\nlist v 'c'"),
        list(&["a", "b", "c"])
    );
    assert_eq!(value_of("list v 'a'\noption v 'b'"), single("b"));
}

#[test]
fn empty_option_creates_nothing_but_empty_list_item_is_kept() {
    assert_eq!(options_of("config t 's'\n\toption v ''\n\toption w\n"), []);
    assert_eq!(
        options_of("config t 's'\n\toption v 'a'\n\toption v ''\n"),
        [],
        "an empty set unsets, as in uci"
    );
    assert_eq!(value_of("list v ''"), list(&[""]));
    assert_eq!(
        value_of("list v 'a'\nlist v ''\nlist v 'b'"),
        list(&["a", "", "b"])
    );
}

#[test]
fn reusing_a_section_name_merges_into_it() {
    let config = parse(
        "config interface 'wan'\n\toption weight '1'\n\tlist track_ip '1.1.1.1'\n\
         config member 'm'\n\
         config interface 'wan'\n\toption weight '2'\n\tlist track_ip '8.8.8.8'\n",
    )
    .unwrap();
    assert_eq!(config.sections.len(), 2);
    assert_eq!(
        config.sections[0].options,
        [
            ("weight".to_string(), single("2")),
            ("track_ip".to_string(), list(&["1.1.1.1", "8.8.8.8"])),
        ]
    );
    assert_eq!(config.sections[1].options, []);
}

#[test]
fn one_letter_commands_and_package_lines() {
    let short = parse("p connmark-lb\nc interface wan\no weight 2\nl track_ip 1.1.1.1\n").unwrap();
    let long = parse(
        "package 'connmark-lb'\nconfig interface 'wan'\noption weight '2'\nlist track_ip '1.1.1.1'\n",
    )
    .unwrap();
    assert_eq!(short, long);
    assert_eq!(
        short.sections[0].options,
        [
            ("weight".to_string(), single("2")),
            ("track_ip".to_string(), list(&["1.1.1.1"])),
        ]
    );
}

#[test]
fn comments_end_commands_even_mid_token() {
    let options = options_of(
        "# header\n\
         config t 's' # trailing\n\
         \t# indented\n\
         \toption a x#y z\n\
         \toption b 'x#y'\n\
         \toption c \"x#y\"\n\
         \toption d x\\#y\n\
         \toption e 'q'#comment\n",
    );
    assert_eq!(
        options,
        [
            ("a".to_string(), single("x")),
            ("b".to_string(), single("x#y")),
            ("c".to_string(), single("x#y")),
            ("d".to_string(), single("x#y")),
            ("e".to_string(), single("q")),
        ]
    );
}

#[test]
fn semicolons_separate_commands() {
    let config = parse("config t 'a'; option x 1;option y '2;3' ; config t b;o z 4\n").unwrap();
    assert_eq!(config.sections.len(), 2);
    assert_eq!(
        config.sections[0].options,
        [
            ("x".to_string(), single("1")),
            ("y".to_string(), single("2;3")),
        ]
    );
    assert_eq!(config.sections[1].options, [("z".to_string(), single("4"))]);
}

#[test]
fn single_quotes_are_literal_and_may_span_lines() {
    assert_eq!(
        value_of(r#"option v 'a\b "c" ;d'"#),
        single(r#"a\b "c" ;d"#)
    );
    assert_eq!(value_of("option v 'one\ntwo'"), single("one\ntwo"));
}

#[test]
fn double_quotes_take_backslashed_characters_literally() {
    assert_eq!(
        value_of(r#"option v "a\"b\\c\nd 'e'""#),
        single(r#"a"b\cnd 'e'"#)
    );
    assert_eq!(value_of("option v \"one\ntwo\""), single("one\ntwo"));
    assert_eq!(value_of("option v \"one\\\ntwo\""), single("onetwo"));
}

#[test]
fn unquoted_backslashes_escape_and_continue_lines() {
    assert_eq!(value_of(r"option v a\ b\'c\\d"), single(r"a b'c\d"));
    assert_eq!(value_of("option v one\\\ntwo"), single("onetwo"));
    assert_eq!(value_of("option v \\\n  continued"), single("continued"));
    assert_eq!(value_of("option v one\\\r\ntwo\r"), single("onetwo"));
}

#[test]
fn adjacent_pieces_concatenate() {
    assert_eq!(value_of(r"option v 'it'\''s'"), single("it's"));
    assert_eq!(value_of(r#"option v a"b c"'d e'f"#), single("ab cd ef"));
    assert_eq!(value_of("list v ''''"), list(&[""]));
}

#[test]
fn crlf_line_ends_are_plain_whitespace() {
    let options = options_of("config t 's'\r\n\toption a '1'\r\n\tlist b x\r\n");
    assert_eq!(
        options,
        [
            ("a".to_string(), single("1")),
            ("b".to_string(), list(&["x"])),
        ]
    );
}

#[test]
fn export_quoting_parses_back_to_the_original() {
    let values = [
        "it's",
        "'",
        "''",
        "",
        "a b\tc",
        "#not a comment",
        "semi;colon",
        r"back\slash\",
        "double \" quote",
        "multi\nline\n",
        "trailing space ",
        "ünïcödé",
    ];
    let export = |v: &str| format!("'{}'", v.replace('\'', r"'\''"));
    let double = |v: &str| format!("\"{}\"", v.replace('\\', r"\\").replace('"', "\\\""));
    let bare = |v: &str| -> String {
        if v.is_empty() {
            return "''".to_string();
        }
        v.chars()
            .map(|c| match c {
                '\n' => "'\n'".to_string(),
                c if c.is_alphanumeric() => c.to_string(),
                c => format!("\\{c}"),
            })
            .collect()
    };
    for render in [&export as &dyn Fn(&str) -> String, &double, &bare] {
        let body: String = values
            .iter()
            .map(|v| format!("\tlist v {}\n", render(v)))
            .collect();
        assert_eq!(value_of(&body), list(&values), "{body}");
    }
}

#[test]
fn errors_name_the_line_and_what_was_found() {
    let cases = [
        (
            "# globals\n\n  option weight '3'\n",
            "line 3: option 'weight' before the first config section",
        ),
        (
            "list lan br-lan\n",
            "line 1: list 'lan' before the first config section",
        ),
        (
            "config t 's'\n\toption a 1\n\n\n\n\n\toption b 'x\n\n",
            "line 7: unterminated single quote",
        ),
        (
            "config t 's'\noption b \"x\\\"\n",
            "line 2: unterminated double quote",
        ),
        (
            "config t 's'\noption v 'two\nlines'\noption w 1 2\n",
            "line 4: too many arguments: option takes at most 2, found extra '2'",
        ),
        (
            "config interface wan extra\n",
            "line 1: too many arguments: config takes at most 2, found extra 'extra'",
        ),
        (
            "config t 's'\n  interface 'wan'\n",
            "line 2: expected config, option, list or package, found 'interface'",
        ),
        (
            "config t 's'\nopt x 1\n",
            "line 2: expected config, option, list or package, found 'opt'",
        ),
        (
            "config interface 'wan-b'\n",
            "line 1: section name 'wan-b' may only contain letters, digits and '_'",
        ),
        (
            "config 'my type' 'x'\n",
            "line 1: section type 'my type' may only contain printable ASCII without spaces",
        ),
        (
            "config\n",
            "line 1: config: expected a section type, found nothing",
        ),
        (
            "config ''\n",
            "line 1: config: expected a section type, found nothing",
        ),
        (
            "config t 's'\noption track-ip 1\n",
            "line 2: option name 'track-ip' may only contain letters, digits and '_'",
        ),
        (
            "config t 's'\nlist\n",
            "line 2: list: expected an option name, found nothing",
        ),
        (
            "config t 's'\noption 'a\tb' 1\n",
            "line 2: option name 'a\\tb' may only contain letters, digits and '_'",
        ),
        (
            "config interface 'wan'\nconfig member 'm'\nconfig member 'wan'\n",
            "line 3: section 'wan' was declared with type 'interface', found type 'member'",
        ),
        (
            "package\n",
            "line 1: package: expected a package name, found nothing",
        ),
        (
            "package 'a b'\n",
            "line 1: package name 'a b' may only contain letters, digits, '_' and '-'",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error_of(text), expected, "{text:?}");
    }
}

/// A hand-written file and the `ubus call uci get` reply for the same package.
const FULL_TEXT: &str = r#"
package connmark-lb

# Two WAN links, 3:1
config globals 'globals'
	option enabled '1'
	option backend 'nftables'
	option mark_mask '0x3F00'
	option table_base 200
	list lan 'br-lan'
	list lan "br-guest"   # guests are balanced too
	option balance 'round-robin'

config interface 'wana'
	option device 'eth1'
	option gateway '10.0.1.1'
	option source '10.0.1.2'
	option weight '3'
	list track_ip '1.1.1.1'
	list track_ip '8.8.8.8'
	option reliability '1'
	option interval '5'

config interface 'wanb'
	option device 'pppoe-wan'
	option weight '1'
	list track_ip '9.9.9.9'; list track_ip '208.67.222.222'
	option initial_state 'online'

config member 'wana_m1'
	option interface 'wana'
	option metric '1'
	option weight '3'

c member wanb_m1
	o interface wanb
	o metric 1
	o weight 1

config policy 'balanced'
	list use_member 'wana_m1'
	list use_member 'wanb_m1'
	option last_resort 'unreachable'

config rule
	option proto 'tcp'
	option dest_port '443'
	option src_ip '192.168.1.0/24'
	option use_policy 'balanced'
"#;

const FULL_JSON: &str = r#"{"values": {
    "globals": {".anonymous": false, ".type": "globals", ".name": "globals", ".index": 0,
        "enabled": "1", "backend": "nftables", "mark_mask": "0x3F00", "table_base": "200",
        "lan": ["br-lan", "br-guest"], "balance": "round-robin"},
    "wana": {".anonymous": false, ".type": "interface", ".name": "wana", ".index": 1,
        "device": "eth1", "gateway": "10.0.1.1", "source": "10.0.1.2", "weight": "3",
        "track_ip": ["1.1.1.1", "8.8.8.8"], "reliability": "1", "interval": "5"},
    "wanb": {".anonymous": false, ".type": "interface", ".name": "wanb", ".index": 2,
        "device": "pppoe-wan", "weight": "1", "track_ip": ["9.9.9.9", "208.67.222.222"],
        "initial_state": "online"},
    "wana_m1": {".anonymous": false, ".type": "member", ".name": "wana_m1", ".index": 3,
        "interface": "wana", "metric": "1", "weight": "3"},
    "wanb_m1": {".anonymous": false, ".type": "member", ".name": "wanb_m1", ".index": 4,
        "interface": "wanb", "metric": "1", "weight": "1"},
    "balanced": {".anonymous": false, ".type": "policy", ".name": "balanced", ".index": 5,
        "use_member": ["wana_m1", "wanb_m1"], "last_resort": "unreachable"},
    "cfg0792bd": {".anonymous": true, ".type": "rule", ".name": "cfg0792bd", ".index": 6,
        "proto": "tcp", "dest_port": "443", "src_ip": "192.168.1.0/24",
        "use_policy": "balanced"}
}}"#;

#[test]
fn full_config_matches_the_uci_get_reply() {
    let text = parse(FULL_TEXT).unwrap();
    let json = RawConfig::from_json_text(FULL_JSON).unwrap();
    assert_eq!(text.sections.len(), json.sections.len());
    for (ours, theirs) in text.sections.iter().zip(&json.sections) {
        assert_eq!(ours.kind, theirs.kind);
        assert_eq!(ours.anonymous, theirs.anonymous);
        assert_eq!(ours.type_index, theirs.type_index);
        assert_eq!(ours.name, theirs.name);
        // JSON objects carry no option order; compare as sets of (name, value).
        let sorted = |section: &RawSection| {
            let mut options = section.options.clone();
            options.sort_by(|a, b| a.0.cmp(&b.0));
            options
        };
        assert_eq!(sorted(ours), sorted(theirs), "section {}", ours.label());
    }
    let rule = &text.sections[6];
    assert_eq!(rule.label(), "@rule[0]");
    assert_eq!(rule.get("use_policy"), Some(&single("balanced")));
}
