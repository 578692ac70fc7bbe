# syncpipe: build, test, demo, bench, install.
#   make          release binaries in target/release
#   make test     the one test command (installs missing Debian packages as root)
#   make demo     the main job live on a local demo tree
#   make bench    benchmarks side by side with the peer tools
#   make fuzz     fuzz the stream reader and bisync --serve (FUZZ_SECONDS each)
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
BINS := watchd batchd pushd bisync keysetup syncpipe relayd
# relayd (the NATS bridge) needs the `relay` feature: only it links tokio.
FEATURES := --features relay
# Debian packages the tests need, and a command (or a file) each provides.
TEST_PACKAGES := rsync:rsync openssh-server:sshd openssh-client:ssh util-linux:unshare systemd:systemd-analyze systemd-container:systemd-nspawn passwd:useradd zsh:zsh bsdutils:script lsyncd:lsyncd nats-server:nats-server fish:fish bash-completion:/usr/share/bash-completion/bash_completion prometheus:promtool prometheus-node-exporter:prometheus-node-exporter python3:python3 libseccomp2:/usr/lib/x86_64-linux-gnu/libseccomp.so.2
# What `make demo` needs beyond the build.
DEMO_PACKAGES := rsync:rsync diffutils:diff

export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build test test-deps demo-deps lint demo demo-fresh bench fuzz install completions clean

all: build

build:
	$(CARGO) build --release --locked $(FEATURES)

test: test-deps lint
	$(CARGO) test --locked --all-targets $(FEATURES)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets $(FEATURES) -- -D warnings

# Installs the Debian packages in $(1) (package:command pairs) that are
# missing, when run as root; otherwise says exactly what to install. One
# step for every target that needs packages, so a fresh machine works.
define deps
	@missing=""; \
	for pair in $(1); do \
	  pkg=$${pair%%:*}; cmd=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || [ -e $$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "make $(2): installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	  else \
	    echo "make $(2): needs these Debian packages:$$missing"; \
	    echo "  install them with: sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi
endef

test-deps:
	$(call deps,$(TEST_PACKAGES),test)

demo-deps:
	$(call deps,$(DEMO_PACKAGES),demo)

demo: demo-deps build
	@bash docs/demo.sh

# `make demo` on a machine without rsync, as root, changing nothing here:
# an overlay of / in a mount namespace with rsync purged (tests/fresh-demo.sh).
demo-fresh: build
	@bash tests/fresh-demo.sh

bench: build
	@bash bench/run.sh

# Coverage-guided fuzzing with libFuzzer (fuzz/, its own crate) of the two
# parsers that read untrusted bytes. Stable rustc: the coverage flags are
# the ones cargo-fuzz passes, minus the sanitizer (which needs nightly).
# As root the fuzzers run as nobody: a serve input may name any path, and
# a finding must not be able to touch the machine. Findings land in
# $(FUZZ_DIR)/artifacts; without a working libFuzzer build the structured
# proptest run (tests/it/fuzz.rs) runs instead, with FUZZ_CASES cases.
FUZZ_SECONDS ?= 60
FUZZ_CASES ?= 20000
FUZZ_DIR ?= /tmp/syncpipe-fuzz
FUZZ_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_RUSTFLAGS := --cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks
fuzz:
	@if (cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --release --bins --target $(FUZZ_TRIPLE)); then \
	  as=""; [ "$$(id -u)" = 0 ] && as="setpriv --reuid=nobody --regid=nogroup --clear-groups --"; \
	  for t in stream serve; do \
	    mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/artifacts && cp fuzz/seeds/$$t/* $(FUZZ_DIR)/corpus/$$t/; \
	    [ -n "$$as" ] && chown -R nobody:nogroup $(FUZZ_DIR); \
	    echo "fuzz: $$t for $(FUZZ_SECONDS) s (corpus $(FUZZ_DIR)/corpus/$$t)"; \
	    (cd $(FUZZ_DIR) && $$as $(CURDIR)/fuzz/target/$(FUZZ_TRIPLE)/release/$$t -max_total_time=$(FUZZ_SECONDS) \
	      -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=artifacts/$$t- corpus/$$t) || exit 1; \
	  done; \
	else \
	  echo "fuzz: no libFuzzer build here; running the structured proptest fuzzer instead"; \
	  SYNCPIPE_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release --test it fuzz:: -- --nocapture; \
	fi

# Debian's zsh reads $(PREFIX)/share/zsh/site-functions for /usr/local;
# Debian's fish reads /usr/share/fish/vendor_completions.d but not the
# /usr/local one unless XDG_DATA_DIRS names it, so the fish files also go
# where fish always looks for system-wide completions.
FISH_COMPLETIONS ?= /etc/fish/completions
# bash-completion sources every file here at start-up, after its own
# `complete -F _cd pushd`: the pushd function and its completion go here.
BASH_COMPAT_DIR ?= /etc/bash_completion.d
# zsh reads no drop-in directory: `make install` (without DESTDIR) adds one
# marked line sourcing the pushd function to this file; ZSHRC= skips it.
ZSHRC ?= /etc/zsh/zshrc

# Binaries, man pages (generated from the clap definitions), shell
# completions (committed, generated the same way) and systemd units.
# INSTALL_FROM=DIR installs binaries already built there (the tests install
# their debug build into a DESTDIR tree this way, without a release build).
INSTALL_FROM ?=
install: $(if $(INSTALL_FROM),,build)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 $(addprefix $(or $(INSTALL_FROM),target/release)/,$(BINS)) $(DESTDIR)$(PREFIX)/bin/
	for b in $(BINS); do $(or $(INSTALL_FROM),target/release)/$$b --print-man > $(DESTDIR)$(PREFIX)/share/man/man1/$$b.1; done
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d \
	  $(DESTDIR)$(FISH_COMPLETIONS)
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)/etc/syncpipe
	for u in units/*@.service units/*@.socket units/*@.timer; do \
	  sed 's#/usr/local/bin#$(PREFIX)/bin#g' $$u > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
	done
	install -m 0644 units/syncpipe.conf.example $(DESTDIR)/etc/syncpipe/example.conf.sample
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system-generators
	install -m 0755 units/syncpipe-generator $(DESTDIR)$(PREFIX)/lib/systemd/system-generators/syncpipe-generator
	install -d $(DESTDIR)$(PREFIX)/share/syncpipe $(DESTDIR)/etc/profile.d $(DESTDIR)$(BASH_COMPAT_DIR)
	install -m 0644 completions/pushd-function.sh $(DESTDIR)$(PREFIX)/share/syncpipe/pushd-function.sh
	install -m 0644 completions/pushd-function.sh $(DESTDIR)/etc/profile.d/syncpipe-pushd.sh
	cat completions/pushd-function.sh completions/pushd.bash > $(DESTDIR)$(BASH_COMPAT_DIR)/syncpipe-pushd
	chmod 0644 $(DESTDIR)$(BASH_COMPAT_DIR)/syncpipe-pushd
	@line='[ -r $(PREFIX)/share/syncpipe/pushd-function.sh ] && . $(PREFIX)/share/syncpipe/pushd-function.sh # syncpipe: pushd at the prompt'; \
	if [ -z "$(DESTDIR)" ] && [ -n "$(ZSHRC)" ] && [ -f "$(ZSHRC)" ]; then \
	  grep -qF '# syncpipe: pushd at the prompt' "$(ZSHRC)" || { echo "$$line" >> "$(ZSHRC)"; echo "install: added to $(ZSHRC): $$line"; }; \
	else \
	  echo "install: for zsh, add to /etc/zsh/zshrc (or ~/.zshrc): $$line"; \
	fi
	for b in $(BINS); do \
	  install -m 0644 completions/$$b.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$b; \
	  install -m 0644 completions/_$$b $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$b; \
	  install -m 0644 completions/$$b.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$b.fish; \
	  install -m 0644 completions/$$b.fish $(DESTDIR)$(FISH_COMPLETIONS)/$$b.fish; \
	done

# Regenerates completions/ from the current flags (a test checks they match).
completions: build
	for b in $(BINS); do \
	  target/release/$$b --print-completions bash > completions/$$b.bash; \
	  target/release/$$b --print-completions zsh > completions/_$$b; \
	  target/release/$$b --print-completions fish > completions/$$b.fish; \
	done

clean:
	$(CARGO) clean
	rm -rf demo
