# lclusterd — set-up, run and test on Debian 12, as root.
#   make prep      system packages, .venv, default rootfs, lclusterd/lclient on PATH (idempotent)
#   make run       prep, then the daemon in the foreground with an embedded etcd
#   make install   prep, then the systemd unit, a commented config file and lclient's shell completions
#   make test      prep, then the whole test suite
#   make test-v2   the runtime's integration tests inside a pure cgroup v2 VM (../shared/v2vm)
#   make bench     the benchmarks under bench/ (make bench-deps installs the peer tools)
#   make rootfs ROOTFS=debian   build the image debian (python3, gcc) into the node's image store
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
ROOTFS ?= busybox
ROOTFS_DIR ?= /var/lib/lclusterd/rootfs
STATE_DIR ?= /var/lib/lclusterd
BINDIR ?= /usr/local/bin
STAMPS := .stamps
DESTDIR ?=
SYSTEMD_DIR ?= /etc/systemd/system
CONFIG_DIR ?= /etc/lclusterd
BASH_COMPLETION_DIR ?= /usr/share/bash-completion/completions
ZSH_COMPLETION_DIR ?= /usr/share/zsh/vendor-completions
V2VM ?= $(CURDIR)/../shared/v2vm
PYTEST_ARGS ?=

# nftables: a node's job network (-net bridge, on by default: lclusterd --bridge) needs libnftables at run time.
APT_PACKAGES := etcd-server etcd-client busybox-static python3-venv python3-dev gcc libc6-dev musl-tools dpkg-dev bzip2 iproute2 debootstrap nftables
JOBINIT := lclusterd/runtime/jobinit/lclusterd-jobinit
BUSYBOX := build/busybox
BENCH_PACKAGES := runc bubblewrap slurm-wlm munge
# Only the tests need these (they build the images they import: umoci an OCI layout, skopeo
# its docker save twin; the web page's tests drive chromium through chromium-driver;
# systemd-analyze checks the unit); make test installs them, make prep and make run do not.
TEST_PACKAGES := umoci skopeo chromium chromium-driver systemd
# The metrics test starts its own Prometheus server on free ports: Debian's, without its
# recommends (node exporter, ...), and the service the package would start stays off.
TEST_SERVICES := prometheus
# The cgroup v2 VM's image lacks these (nftables and the libraries it needs beyond the image's):
# their .debs are fetched on the host and installed in the guest, which has no network.
V2_DEBS := nftables libnftables1 libnftnl11 libjansson4 libedit2
UDP_ECHO := build/udp-echo

.PHONY: prep run install install-files test test-unit test-integration test-v2 rootfs debian-image links users proto bench bench-deps clean

prep: $(STAMPS)/apt $(STAMPS)/venv $(JOBINIT) rootfs links users

# Only calls apt-get when a package of $(1) is missing, so a second run takes no time.
apt_install = missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "$(2): installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMPS)/apt: Makefile
	@$(call apt_install,$(APT_PACKAGES),prep)
	@mkdir -p $(STAMPS) && touch $@

# As apt_install, without recommends, and what the packages' services started is stopped and
# disabled again (where systemd runs; in a container policy-rc.d usually keeps them from starting).
apt_install_off = missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "$(2): installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing && \
		if [ -d /run/systemd/system ]; then systemctl disable --now $$missing 2>/dev/null || true; fi; \
	fi

$(STAMPS)/test-apt: Makefile $(STAMPS)/apt
	@$(call apt_install,$(TEST_PACKAGES),test)
	@$(call apt_install_off,$(TEST_SERVICES),test)
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@

# Every job's first process (see jobinit.c's header). Static: no dynamic loader on the start path.
JOBINIT_SOURCES := $(wildcard lclusterd/runtime/jobinit/*.c)
JOBINIT_HEADERS := $(wildcard lclusterd/runtime/jobinit/*.h)
$(JOBINIT): $(JOBINIT_SOURCES) $(JOBINIT_HEADERS) $(STAMPS)/apt
	musl-gcc -O2 -Wall -Wextra -Werror -static -o $@ $(JOBINIT_SOURCES)

# The default rootfs's busybox: Debian's, linked with musl (see the script for why; ~30 s).
$(BUSYBOX): rootfs/busybox-musl.sh $(STAMPS)/apt
	sh rootfs/busybox-musl.sh $@

# ROOTFS=busybox (the default): the node's rootfs at ROOTFS_DIR, which the image store lists
# as the image busybox. Another kind (debian): an image of that name in the node's store.
rootfs: $(STAMPS)/apt $(if $(filter busybox,$(ROOTFS)),$(BUSYBOX),$(STAMPS)/venv)
	@if [ "$(ROOTFS)" = busybox ]; then BUSYBOX=$(BUSYBOX) sh rootfs/build.sh busybox $(ROOTFS_DIR); \
	else PYTHON=$(PY) sh rootfs/image.sh $(ROOTFS) $(STATE_DIR); fi

# The system user and group lclusterd, and its subordinate id range (/etc/subuid, /etc/subgid):
# every job's user namespace takes 65536 ids of it (lclusterd/runtime/userns.py). Above
# the range useradd hands out (login.defs SUB_UID_MAX 600100000) and below 2^31.
SUBID_RANGE := lclusterd:1000000000:1073741824
users:
	@getent group lclusterd >/dev/null || groupadd --system lclusterd
	@getent passwd lclusterd >/dev/null || useradd --system --gid lclusterd --no-create-home \
		--home-dir /nonexistent --shell /usr/sbin/nologin lclusterd
	@for f in /etc/subuid /etc/subgid; do grep -q '^lclusterd:' $$f 2>/dev/null || echo '$(SUBID_RANGE)' >> $$f; done

# lclient on PATH is a launcher that starts python without site (tools/launcher.py says why:
# the venv's console script pays for the editable install's finder at every start).
LCLIENT_LAUNCHER := $(VENV)/launch/lclient
$(LCLIENT_LAUNCHER): tools/launcher.py $(STAMPS)/venv
	@mkdir -p $(dir $@)
	$(PY) tools/launcher.py $@

links: $(STAMPS)/venv $(LCLIENT_LAUNCHER)
	@[ "$$(readlink $(BINDIR)/lclusterd)" = "$(VENV)/bin/lclusterd" ] || ln -sfn $(VENV)/bin/lclusterd $(BINDIR)/lclusterd
	@[ "$$(readlink $(BINDIR)/lclient)" = "$(LCLIENT_LAUNCHER)" ] || ln -sfn $(LCLIENT_LAUNCHER) $(BINDIR)/lclient

run: prep
	$(VENV)/bin/lclusterd --rootfs $(ROOTFS_DIR)

# The node as a systemd service (dist/lclusterd.service: Restart=on-failure, its exit statuses),
# /etc/lclusterd/lclusterd.toml with every option commented out at its default (generated
# from the daemon's options, so it never drifts; an existing one is kept), and lclient's bash
# and zsh completions. Then: systemctl enable --now lclusterd. See docs/operations.md.
install: prep install-files
	@if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "install: start the node with: systemctl enable --now lclusterd"

# The files alone (under DESTDIR when given), from the venv's lclusterd and lclient.
install-files:
	@[ -x $(VENV)/bin/lclusterd ] || { echo "install-files: no $(VENV)/bin/lclusterd (make prep first)"; exit 1; }
	install -d $(DESTDIR)$(SYSTEMD_DIR) $(DESTDIR)$(CONFIG_DIR) $(DESTDIR)$(BASH_COMPLETION_DIR) $(DESTDIR)$(ZSH_COMPLETION_DIR)
	sed 's|@BINDIR@|$(BINDIR)|g' dist/lclusterd.service > $(DESTDIR)$(SYSTEMD_DIR)/lclusterd.service
	chmod 644 $(DESTDIR)$(SYSTEMD_DIR)/lclusterd.service
	@config=$(DESTDIR)$(CONFIG_DIR)/lclusterd.toml; \
	if [ -e $$config ]; then echo "install-files: kept $$config (lclusterd config-template prints every option)"; \
	else $(VENV)/bin/lclusterd config-template > $$config.new && chmod 644 $$config.new && mv $$config.new $$config; \
		echo "wrote $$config"; fi
	_LCLIENT_COMPLETE=bash_source $(VENV)/bin/lclient > $(DESTDIR)$(BASH_COMPLETION_DIR)/lclient
	_LCLIENT_COMPLETE=zsh_source $(VENV)/bin/lclient > $(DESTDIR)$(ZSH_COMPLETION_DIR)/_lclient
	chmod 644 $(DESTDIR)$(BASH_COMPLETION_DIR)/lclient $(DESTDIR)$(ZSH_COMPLETION_DIR)/_lclient

test: prep $(STAMPS)/test-apt debian-image
	$(PY) -m pytest $(PYTEST_ARGS)

# The image debian for tests/integration/test_images_cluster.py: built and registered once, and
# skipped while the node's store has it (debootstrap, pack and import took 1m45s here).
debian-image: $(STAMPS)/apt $(STAMPS)/venv
	@if [ -f $(STATE_DIR)/images/debian/image.json ]; then echo "debian-image: $(STATE_DIR) already has the image debian"; \
	else PYTHON=$(PY) sh rootfs/image.sh debian $(STATE_DIR); fi

test-unit: $(STAMPS)/venv $(JOBINIT)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: prep $(STAMPS)/test-apt debian-image
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# A UDP server for the network tests' jobs (the rootfs's busybox has none), static: the v2 VM
# has no compiler, so it is built here and copied in with the tree.
$(UDP_ECHO): tests/integration/data/udp_echo.c $(STAMPS)/apt
	@mkdir -p $(dir $@)
	musl-gcc -static -O2 -o $@ $<

build/v2-debs/.fetched: Makefile
	@rm -rf $(dir $@) && mkdir -p $(dir $@)
	cd $(dir $@) && apt-get download -q -o APT::Sandbox::User=root $(V2_DEBS)
	@touch $@

# The venv is made on the host with Debian's python3, which the guest also has, so it
# works there unchanged; the rootfs is built inside the guest from the copied build/busybox.
test-v2: prep $(UDP_ECHO) build/v2-debs/.fetched
	@[ -x $(V2VM)/run-v2.sh ] || { echo "test-v2: $(V2VM)/run-v2.sh not found"; exit 1; }
	$(V2VM)/run-v2.sh -t 1200 -x ./.stamps -x ./.pytest_cache $(CURDIR) \
		'set -e; make users; BUSYBOX=$(BUSYBOX) sh rootfs/build.sh busybox /var/lib/lclusterd/rootfs; \
		 dpkg -i build/v2-debs/*.deb >/dev/null; \
		 $(PY) -m pytest -p no:cacheprovider tests/integration/test_runtime.py tests/integration/test_users_runtime.py tests/integration/test_volumes_runtime.py tests/integration/test_exec_runtime.py tests/integration/test_cgroups_real.py tests/unit/test_cgroups.py tests/unit/test_runtime_units.py tests/integration/test_network.py tests/unit/test_network_units.py $(PYTEST_ARGS); \
		 $(PY) -m pytest -p no:cacheprovider -m v2vm tests/integration/test_containment.py $(PYTEST_ARGS)'

proto: $(STAMPS)/venv
	$(PY) -m grpc_tools.protoc -I proto --python_out=. --grpc_python_out=. --pyi_out=. proto/lclusterd/rpc/lclusterd.proto

bench: prep
	$(PY) bench/runtime.py
	$(PY) bench/cluster.py

# Installs only what is missing (a second run does nothing). No systemd here and bench/slurm.py
# starts its own munged/slurmctld/slurmd, so while apt-get runs a policy-rc.d that exits 101
# keeps package scripts from starting daemons; whatever policy-rc.d was there before is put
# back afterwards (or ours removed), also when apt-get fails or is interrupted (a copy left
# by a killed run is restored first).
bench-deps: $(STAMPS)/apt
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "bench-deps: $(BENCH_PACKAGES) installed"; exit 0; fi; \
	echo "bench-deps: installing" $$missing; \
	rc=/usr/sbin/policy-rc.d; saved=$$rc.bench-deps-saved; \
	if [ -e $$saved ]; then mv -f $$saved $$rc; fi; \
	if [ -e $$rc ]; then mv -f $$rc $$saved; fi; \
	trap 'if [ -e "$$saved" ]; then mv -f "$$saved" "$$rc"; else rm -f "$$rc"; fi' EXIT; \
	trap 'exit 130' INT TERM HUP; \
	printf '#!/bin/sh\nexit 101\n' > $$rc && chmod 755 $$rc && \
	{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }; }

clean:
	rm -rf $(STAMPS) $(VENV) build *.egg-info $(JOBINIT)
