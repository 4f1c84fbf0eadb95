//! The feed Makefiles (`openwrt/`) as the openwrt/packages and openwrt/luci maintainers read
//! them, and the two ways a router built from them went wrong: `explain` reading no sets on an
//! nft without JSON support, and the iptables variant loading rules whose tools and matches it
//! did not depend on. The Makefiles are evaluated by GNU make against the stand-in SDK,
//! `scripts/lint-feed.sh` runs on them and on broken copies, `make dist` fills a copy.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::addr::LAN_HOST;
use crate::support::lab::Lab;
use crate::support::lbconfig::{Backend, Balance, ConfigFile, LbConfig};
use crate::support::package::{
    FEED_DIR, LUCI_DIR, NAME, PACKAGE_TREE, STUB_SDK, assert_package_tree, binary, cargo_field,
    crate_version, feed_dump, feed_make, pulled_in, repo,
};
use crate::support::process::{run, run_ok};
use crate::support::tempdir::TempDir;

#[test]
fn feed_makefiles_declare_source_license_maintainer_and_version() {
    let dump = feed_dump(FEED_DIR, &[]);
    let version = crate_version();
    assert_eq!(dump["PKG_NAME"], NAME);
    assert_eq!(
        dump["PKG_VERSION"], version,
        "PKG_VERSION must follow Cargo.toml"
    );
    let parts: Vec<u32> = version
        .split('.')
        .map(|p| p.parse().expect("a numeric version part"))
        .collect();
    assert_eq!(parts.len(), 3, "apk wants x.y.z, got {version}");
    assert!(dump["PKG_RELEASE"].parse::<u32>().expect("an integer") >= 1);
    assert_eq!(dump["PKG_LICENSE"], cargo_field("license"));
    assert_eq!(dump["PKG_LICENSE_FILES"], "LICENSE");
    let license = fs::read_to_string(repo().join("LICENSE")).unwrap();
    assert!(
        license.contains("GNU GENERAL PUBLIC LICENSE") && license.contains("Version 2, June 1991"),
        "LICENSE is not the GPL-2.0 text"
    );
    assert_eq!(dump["PKG_SOURCE"], format!("{NAME}-{version}.tar.gz"));
    let url = &dump["PKG_SOURCE_URL"];
    assert!(
        url.starts_with("https://") && url.ends_with(&format!("/v{version}")),
        "PKG_SOURCE_URL {url} is not a tagged release's directory"
    );
    let hash = &dump["PKG_HASH"];
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "PKG_HASH {hash}"
    );
    assert_eq!(dump["PKG_BUILD_DEPENDS"], "rust/host");
    assert_eq!(dump["PKG_BUILD_PARALLEL"], "1");
    assert_eq!(
        dump["STUB_RUST_PACKAGES"], "connmark-lb connmark-lb-iptables",
        "every variant goes through RustBinPackage"
    );
    let maintainer = &dump["PKG_MAINTAINER"];
    assert!(
        maintainer.contains(" <") && maintainer.contains('@') && maintainer.ends_with('>'),
        "{maintainer}"
    );

    let luci = feed_dump(LUCI_DIR, &[]);
    assert_eq!(luci["PKG_VERSION"], version);
    assert_eq!(luci["PKG_LICENSE"], cargo_field("license"));
    assert_eq!(&luci["PKG_MAINTAINER"], maintainer);
    let app = "luci-app-connmark-lb";
    assert_eq!(
        pulled_in(&luci[&format!("{app}.DEPENDS")]),
        [NAME, "luci-base"]
    );
    assert_eq!(luci[&format!("{app}.URL")], dump[&format!("{NAME}.URL")]);
}

#[test]
fn feed_makefile_has_nftables_default_and_iptables_variant() {
    let dump = feed_dump(FEED_DIR, &[]);
    let stub = fs::read_to_string(
        repo()
            .join(STUB_SDK)
            .join("feeds/packages/lang/rust/rust-package.mk"),
    )
    .unwrap();
    let arch = stub
        .lines()
        .find_map(|line| line.strip_prefix("RUST_ARCH_DEPENDS:="))
        .unwrap();
    for (package, variant) in [
        ("connmark-lb", "nftables"),
        ("connmark-lb-iptables", "iptables"),
    ] {
        let field = |name: &str| dump[&format!("{package}.{name}")].clone();
        assert_eq!(
            field("DEPENDS").split_whitespace().next(),
            Some(arch),
            "{package}: DEPENDS must start with $(RUST_ARCH_DEPENDS)"
        );
        assert_eq!(field("VARIANT"), variant);
        assert_eq!(field("PROVIDES"), NAME);
        assert_eq!(
            field("conffiles"),
            "/etc/config/connmark-lb /etc/connmark-lb.user"
        );
        for name in ["SECTION", "CATEGORY", "TITLE", "URL", "description"] {
            assert!(!field(name).is_empty(), "{package} has no {name}");
        }
    }
    assert_eq!(dump["connmark-lb.DEFAULT_VARIANT"], "1");
    assert_eq!(dump["connmark-lb-iptables.CONFLICTS"], NAME);
}

/// The OpenWrt packages that hold what one `check` text (one backend's rules) needs on the
/// router, with the IPv6-only ones apart: tools by section, kernel modules by table or
/// expression, and the iptables extensions (shared by both families) by every match and
/// target, so that a new one fails here until it is given its package.
fn needed_by(text: &str) -> (BTreeSet<&'static str>, BTreeSet<&'static str>) {
    let (mut always, mut ipv6) = (BTreeSet::new(), BTreeSet::new());
    // The daemon's conntrack deletes and events.
    always.insert("kmod-nf-conntrack-netlink");
    let mut section = "";
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("# ") {
            section = name;
        }
        let (tool, nat) = match section {
            "iptables rules" => (&mut always, ["iptables", "kmod-ipt-nat"]),
            "ip6tables rules" => (&mut ipv6, ["ip6tables", "kmod-ipt-nat6"]),
            "nftables rules" => {
                // `nft -j` (explain, our table's listing): nftables-json, never -nojson.
                always.extend(["nftables-json", "kmod-nft-core"]);
                if line.contains(" snat ") || line.contains(" masquerade") {
                    always.insert("kmod-nft-nat");
                }
                continue;
            }
            "ip -batch" | "ip -6 -batch" => {
                always.insert("ip-full");
                continue;
            }
            _ => continue,
        };
        tool.insert(nat[0]);
        if line == "*nat" {
            tool.insert(nat[1]);
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            let package = match pair {
                ["-m", "addrtype"] => "iptables-mod-extra",
                ["-m", "statistic"] => "iptables-mod-ipopt",
                ["-m", "connmark"] | ["-j", "CONNMARK"] => "iptables-mod-conntrack-extra",
                // In the iptables package itself.
                [
                    "-m",
                    "mark" | "conntrack" | "icmp" | "icmp6" | "multiport" | "comment" | "mac"
                    | "time",
                ]
                | [
                    "-j",
                    "MARK" | "SNAT" | "DNAT" | "MASQUERADE" | "RETURN" | "ACCEPT",
                ] => continue,
                ["-j" | "-g", chain] if chain.starts_with("CMLB") => continue,
                ["-m" | "-j" | "-g", other] => panic!("no package known for {} {other}", pair[0]),
                _ => continue,
            };
            always.insert(package);
        }
    }
    (always, ipv6)
}

/// Every package the rules of every golden case need, per backend, is a dependency of that
/// backend's variant; IPv6-only ones are conditional on IPV6 (`+IPV6:NAME`).
#[test]
fn each_variant_depends_on_everything_its_rules_run_on() {
    let dump = feed_dump(FEED_DIR, &[]);
    let mut cases: Vec<PathBuf> = fs::read_dir(repo().join("tests/golden"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("why").is_file())
        .collect();
    cases.sort();
    for (package, backend) in [
        ("connmark-lb", "nftables"),
        ("connmark-lb-iptables", "iptables"),
    ] {
        let depends = &dump[&format!("{package}.DEPENDS")];
        let pulled = pulled_in(depends);
        let (mut always, mut ipv6) = (BTreeSet::new(), BTreeSet::new());
        for case in &cases {
            let text = fs::read_to_string(case.join(format!("expected-{backend}.txt"))).unwrap();
            let (a, v6) = needed_by(&text);
            always.extend(a);
            ipv6.extend(v6);
        }
        for needed in &always {
            assert!(
                pulled.iter().any(|p| p == needed),
                "{package} does not depend on {needed}: {depends}"
            );
        }
        for needed in &ipv6 {
            assert!(
                depends
                    .split_whitespace()
                    .any(|d| d == format!("+IPV6:{needed}")),
                "{package} does not depend on +IPV6:{needed}: {depends}"
            );
        }
        if backend == "iptables" {
            assert!(
                ipv6.contains("ip6tables") && ipv6.contains("kmod-ipt-nat6"),
                "{ipv6:?}"
            );
        }
    }
    // The virtual `nftables` is satisfied by nftables-nojson.
    assert!(!pulled_in(&dump["connmark-lb.DEPENDS"]).contains(&"nftables".to_string()));
}

/// Where `program` is on PATH.
fn on_path(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no {program} on PATH"))
}

const ADDRESS_SET: &str = "
config set 'office'
	list entry '172.31.254.1'

config member 'm2'
	option interface 'wan2'

config policy 'only2'
	list use_member 'm2'

config rule 'to_office'
	option dest_set 'office'
	option use_policy 'only2'
";

/// `explain --json` of a connection to the set's address with `config`, with `path_first` (a
/// directory) ahead of PATH: its output whatever the status.
fn explain_with(lab: &Lab, config: &ConfigFile, path_first: Option<&Path>) -> Output {
    let query = [
        LAN_HOST.to_string(),
        "172.31.254.1".into(),
        "tcp".into(),
        "7000".into(),
    ];
    let mut args = vec!["explain", "--json", config.flag(), config.path_str()];
    args.extend(query.iter().map(String::as_str));
    let mut command = lab.topo.lb_command(&args);
    if let Some(dir) = path_first {
        let path = std::env::var("PATH").unwrap_or_default();
        command.env("PATH", format!("{}:{path}", dir.display()));
    }
    run(&mut command)
}

/// On an nft without JSON support (OpenWrt's nftables-nojson refuses `-j` this way), explain
/// of a connection that only an address set sends to wan2 fails with a message naming the
/// cure, instead of answering as if the set were empty; the real nft answers wan2. Without
/// sets in our table, explain needs no JSON and answers.
#[test]
fn explain_on_an_nft_without_json_refuses_instead_of_reading_no_sets() {
    let config =
        LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1]).with_sections(ADDRESS_SET);
    let lab = Lab::applied(&config);
    let nojson = TempDir::new("nojson-nft");
    fs::write(
        nojson.join("nft"),
        format!(
            "#!/bin/sh\nfor arg; do\n\tcase $arg in -j | --json)\n\t\t\
             echo 'JSON support not compiled-in' >&2\n\t\texit 1 ;;\n\tesac\ndone\n\
             exec {} \"$@\"\n",
            on_path("nft").display()
        ),
    )
    .unwrap();
    fs::set_permissions(nojson.join("nft"), fs::Permissions::from_mode(0o755)).unwrap();

    let real = explain_with(&lab, &lab.config, None);
    assert!(real.status.success(), "{real:?}");
    let answer: Value = serde_json::from_slice(&real.stdout).unwrap();
    assert_eq!(
        (answer["rule"].as_str(), answer["interface"].as_str()),
        (Some("to_office"), Some("wan2")),
        "{answer}"
    );

    let refused = explain_with(&lab, &lab.config, Some(nojson.path()));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(refused.stdout.is_empty(), "{refused:?}");
    assert!(
        stderr.contains("nftables-json") && stderr.contains("JSON support not compiled-in"),
        "{stderr}"
    );

    let plain = LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1]);
    let plain = lab.topo.write_config("plain", &plain);
    lab.topo.apply(&plain);
    let answered = explain_with(&lab, &plain, Some(nojson.path()));
    assert!(answered.status.success(), "{answered:?}");
    let answer: Value = serde_json::from_slice(&answered.stdout).unwrap();
    assert!(answer["rule"].is_null(), "{answer}");
}

/// What `connmark-lb --version` prints: the feed CI's generic check looks for PKG_VERSION in
/// it.
#[test]
fn version_flag_prints_the_package_version() {
    let out = run_ok(Command::new(binary()).arg("--version"));
    assert_eq!(
        out,
        format!("{NAME} {}\n", feed_dump(FEED_DIR, &[])["PKG_VERSION"])
    );
}

#[test]
fn feed_makefile_installs_every_file_with_openwrt_modes() {
    for pkg in ["connmark-lb", "connmark-lb-iptables"] {
        let tmp = TempDir::new("feed-install");
        let install_dir = tmp.join("ipkg-install");
        fs::create_dir_all(install_dir.join("bin")).unwrap();
        let built = install_dir.join("bin/connmark-lb");
        fs::copy(binary(), &built).unwrap();
        let dest = tmp.join("dest");
        feed_make(
            FEED_DIR,
            &[
                &format!("PKG_BUILD_DIR={}", repo().display()),
                &format!("PKG_INSTALL_DIR={}", install_dir.display()),
                &format!("DESTDIR={}", dest.display()),
                &format!("install-{pkg}"),
            ],
        );
        assert_package_tree(&dest, &built);
    }
}

/// By default the SDK unpacks the release tarball; CONNMARK_LB_TREE copies a checkout
/// instead, without its build output, and drops the download.
#[test]
fn prepare_unpacks_the_tarball_or_copies_the_tree_behind_the_switch() {
    let tmp = TempDir::new("feed-prepare");
    let build_dir = tmp.join("build");
    let build = format!("PKG_BUILD_DIR={}", build_dir.display());
    let out = feed_make(FEED_DIR, &[&build, "prepare"]);
    assert!(
        out.contains(&format!("unpack {NAME}-{}.tar.gz", crate_version())),
        "{out}"
    );

    let tree = format!("CONNMARK_LB_TREE={}", repo().display());
    assert!(feed_dump(FEED_DIR, &[&tree])["PKG_SOURCE"].is_empty());
    assert!(
        repo().join("target").is_dir(),
        "cargo test builds into target/, which prepare must leave out"
    );
    feed_make(FEED_DIR, &[&build, &tree, "prepare"]);
    for needed in ["Cargo.toml", "Cargo.lock", "src/main.rs", "LICENSE"]
        .into_iter()
        .chain(
            PACKAGE_TREE
                .iter()
                .filter_map(|(_, _, s)| *s)
                .filter(|s| !s.is_empty()),
        )
    {
        assert!(
            build_dir.join(needed).is_file(),
            "prepare did not copy {needed}"
        );
    }
    for left_out in ["target", ".git"] {
        assert!(
            !build_dir.join(left_out).exists(),
            "prepare copied {left_out}"
        );
    }
}

/// `scripts/lint-feed.sh` on `makefile`: (success, stdout).
fn lint(makefile: &Path) -> (bool, String) {
    let out = run(Command::new(repo().join("scripts/lint-feed.sh")).arg(makefile));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The lint passes both feed Makefiles and fails a copy with any one required field or
/// line taken away or wrong, naming it.
#[test]
fn lint_passes_the_feed_makefiles_and_fails_each_broken_copy() {
    let feed = repo().join(FEED_DIR).join("Makefile");
    let luci = repo().join(LUCI_DIR).join("Makefile");
    for makefile in [&feed, &luci] {
        let (ok, out) = lint(makefile);
        assert!(ok, "{}: {out}", makefile.display());
    }
    // (makefile, a line it holds, what replaces it, what the lint must say)
    let breaks: &[(&Path, &str, &str, &str)] = &[
        (&feed, "PKG_HASH:=", "", "PKG_HASH"),
        (&feed, "PKG_SOURCE:=", "", "PKG_SOURCE is"),
        (&feed, "PKG_SOURCE_URL:=", "", "PKG_SOURCE_URL"),
        (&feed, "PKG_LICENSE_FILES:=", "", "PKG_LICENSE_FILES"),
        (
            &feed,
            "PKG_LICENSE_FILES:=",
            "PKG_LICENSE_FILES:=COPYING",
            "no COPYING",
        ),
        (
            &feed,
            "PKG_LICENSE:=",
            "PKG_LICENSE:=GPL-2.0",
            "PKG_LICENSE is",
        ),
        (&feed, "PKG_MAINTAINER:=", "", "PKG_MAINTAINER"),
        (&feed, "PKG_VERSION:=", "PKG_VERSION:=0.0.1", "PKG_VERSION"),
        (&feed, "  URL:=", "", "sets no URL"),
        (
            &feed,
            "include ../../lang/rust/rust-package.mk",
            "include $(TOPDIR)/feeds/packages/lang/rust/rust-package.mk",
            "include ../../lang/rust/rust-package.mk",
        ),
        (
            &feed,
            "$(eval $(call RustBinPackage,connmark-lb-iptables))",
            "",
            "RustBinPackage,connmark-lb-iptables",
        ),
        (
            &feed,
            "Package/connmark-lb-iptables/conffiles =",
            "",
            "no Package/connmark-lb-iptables/conffiles",
        ),
        (
            &feed,
            "# SPDX-License-Identifier:",
            "# SPDX-License-Identifier: MIT",
            "SPDX",
        ),
        (&luci, "PKG_MAINTAINER:=", "", "PKG_MAINTAINER"),
        (&luci, "LUCI_URL:=", "", "LUCI_URL"),
        (&luci, "PKG_LICENSE:=", "", "PKG_LICENSE"),
        (
            &luci,
            "include ../../luci.mk",
            "include $(TOPDIR)/feeds/luci/luci.mk",
            "luci.mk",
        ),
    ];
    let tmp = TempDir::new("lint-feed");
    for (makefile, line, replacement, says) in breaks {
        let text = fs::read_to_string(makefile).unwrap();
        let broken: String = text
            .lines()
            .map(|l| if l.starts_with(line) { replacement } else { l })
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(broken, text, "{line:?} is not in {}", makefile.display());
        let copy = tmp.write("Makefile", &broken);
        let (ok, out) = lint(&copy);
        assert!(!ok && out.contains(says), "without {line:?}: {out}");
    }
}

/// `make dist` builds the release tarball of HEAD and writes its hash, name and tagged URL
/// into the feed Makefile (here a copy), which then passes the lint.
#[test]
fn make_dist_fills_the_feed_makefiles_source_fields() {
    let tmp = TempDir::new("dist");
    let makefile = tmp.join("Makefile");
    let original = fs::read_to_string(repo().join(FEED_DIR).join("Makefile")).unwrap();
    let emptied: String = original
        .lines()
        .map(|l| match l.split_once(":=") {
            Some((key @ ("PKG_SOURCE" | "PKG_SOURCE_URL" | "PKG_HASH"), _)) => format!("{key}:=\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    fs::write(&makefile, emptied).unwrap();
    run_ok(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(repo())
            .arg("dist")
            .arg(format!("DIST={}", tmp.join("dist").display()))
            .arg(format!("FEED_MAKEFILE={}", makefile.display()))
            .arg("RELEASE_URL=https://releases.example/connmark-lb"),
    );
    let version = crate_version();
    let tarball = tmp.join(&format!("dist/{NAME}-{version}.tar.gz"));
    let sha = run_ok(Command::new("sha256sum").arg(&tarball));
    let filled = fs::read_to_string(&makefile).unwrap();
    for line in [
        format!("PKG_HASH:={}", sha.split_whitespace().next().unwrap()),
        "PKG_SOURCE:=$(PKG_NAME)-$(PKG_VERSION).tar.gz".to_string(),
        "PKG_SOURCE_URL:=https://releases.example/connmark-lb/v$(PKG_VERSION)".to_string(),
    ] {
        assert!(
            filled.lines().any(|l| l == line),
            "no {line:?} in\n{filled}"
        );
    }
    let (ok, out) = lint(&makefile);
    assert!(ok, "{out}");
    let listing = run_ok(Command::new("tar").arg("-tzf").arg(&tarball));
    for member in [
        "LICENSE",
        "Cargo.lock",
        "files/etc/connmark-lb.user",
        "openwrt/net/connmark-lb/Makefile",
    ] {
        let member = format!("{NAME}-{version}/{member}");
        assert!(
            listing.lines().any(|l| l == member),
            "the tarball lacks {member}"
        );
    }
}
