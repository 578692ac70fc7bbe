# syncpipe: build, test, demo, bench, install.
#   make          release binaries in target/release
#   make test     the one test command (installs missing Debian packages as root)
#   make demo     the main job live on a local demo tree
#   make bench    benchmarks side by side with the peer tools
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
BINS := watchd pushd
# Debian packages the tests need, and a command each provides.
TEST_PACKAGES := rsync:rsync openssh-server:sshd openssh-client:ssh util-linux:unshare zsh:zsh

export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build test test-deps lint demo bench install clean

all: build

build:
	$(CARGO) build --release --locked

test: test-deps lint
	$(CARGO) test --locked --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

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

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(addprefix target/release/,$(BINS)) $(DESTDIR)$(PREFIX)/bin/

clean:
	$(CARGO) clean
	rm -rf demo
