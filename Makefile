# syncpipe: build, test, demo, bench, install.
#   make          release binaries in target/release
#   make test     the one test command (installs missing Debian packages as root)
#   make demo     the main job live on a local demo tree
#   make bench    benchmarks side by side with the peer tools
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
BINS := watchd batchd pushd bisync keysetup relayd
# relayd (the NATS bridge) needs the `relay` feature: only it links tokio.
FEATURES := --features relay
# Debian packages the tests need, and a command each provides.
TEST_PACKAGES := rsync:rsync openssh-server:sshd openssh-client:ssh util-linux:unshare systemd:systemd-analyze systemd-container:systemd-nspawn passwd:useradd zsh:zsh bsdutils:script nats-server:nats-server

export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build test test-deps lint demo bench install completions clean

all: build

build:
	$(CARGO) build --release --locked $(FEATURES)

test: test-deps lint
	$(CARGO) test --locked --all-targets $(FEATURES)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets $(FEATURES) -- -D warnings

# Installs what is missing when run as root; otherwise says exactly what to install.
test-deps:
	@missing=""; \
	for pair in $(TEST_PACKAGES); do \
	  pkg=$${pair%%:*}; cmd=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "make test: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	  else \
	    echo "make test: the tests need these Debian packages:$$missing"; \
	    echo "  install them with: sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

demo: build
	@bash docs/demo.sh

bench: build
	@bash bench/run.sh

# Binaries, man pages (generated from the clap definitions), shell
# completions (committed, generated the same way) and systemd units.
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 $(addprefix target/release/,$(BINS)) $(DESTDIR)$(PREFIX)/bin/
	for b in $(BINS); do target/release/$$b --print-man > $(DESTDIR)$(PREFIX)/share/man/man1/$$b.1; done
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)/etc/syncpipe
	for u in units/*@.service units/*@.socket units/*@.timer; do \
	  sed 's#/usr/local/bin#$(PREFIX)/bin#g' $$u > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
	done
	install -m 0644 units/syncpipe.conf.example $(DESTDIR)/etc/syncpipe/example.conf.sample
	for b in $(BINS); do \
	  install -m 0644 completions/$$b.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$b; \
	  install -m 0644 completions/_$$b $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_$$b; \
	  install -m 0644 completions/$$b.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$b.fish; \
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
