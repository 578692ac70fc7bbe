complete -c pushd -l from -d 'Pull into the one local TARGET from UPSTREAM (DIR or [user@]host:PATH) instead of pushing: for replicas that follow the stream themselves (relayd subscribe | batchd | pushd --from)' -r
complete -c pushd -l upstream-state -d 'With --from, when the upstream is itself a replica (tiers): its --state FILE on its host; nothing is pulled before it has applied it' -r
complete -c pushd -l serve -d 'Be the agent for DIR on the far side of ssh: apply a pusher\'s requests on stdin beneath DIR (started by pushd itself over ssh; what was applied is recorded in $XDG_STATE_HOME/syncpipe/agent/; docs/protocol.md)' -r -F
complete -c pushd -l agent-path -d 'The agent on ssh targets, as the remote shell runs it (default `env pushd`)' -r
complete -c pushd -l direct-max -d 'Local targets, as root: a batch of at most N paths is applied like --direct, without starting rsync, unless rsync flags ask for more (filters, --rsync-opt, --checksum, --inplace, --partial, --bwlimit, --rsync-binary); 0: always rsync. A failure is applied by rsync and warned once per cause; one that lasts turns this off until restart' -r
complete -c pushd -l delete -d 'Which transfers may delete on the target' -r -f -a "true\t'Deletions propagate always'
false\t'Never delete on the target'
startup\t'Only full syncs (start-up, new stream, overflow) delete'
running\t'Only changes seen while running delete; full syncs do not'"
complete -c pushd -l connect -d 'Read the stream from a writer\'s --listen socket instead of stdin, resuming where --state says' -r -F
complete -c pushd -l state -d 'Remember per target the stream and last applied seq in FILE, to resume' -r -F
complete -c pushd -l max-procs -d 'Transfers running at the same time, over all targets' -r
complete -c pushd -l max-pending -d 'Pending changes per target before falling back to a full sync' -r
complete -c pushd -l retry-min -d 'First retry delay after a failed transfer' -r
complete -c pushd -l retry-max -d 'Longest retry delay (the delay doubles per failure up to this)' -r
complete -c pushd -l io-timeout -d 'Give up a transfer after this long without I/O (rsync --timeout, ssh ConnectTimeout); 0: never' -r
complete -c pushd -l retry-jitter -d 'Random part of each retry delay, 0 to 1' -r
complete -c pushd -l max-delete -d 'Hold the deletions of a batch or full sync past N entries, or P% of the target' -r
complete -c pushd -l sentinel -d 'Refuse to sync unless FILE (relative to the source root) exists' -r -F
complete -c pushd -l bwlimit -d 'Bandwidth limit (rsync\'s --bwlimit, e.g. 1m)' -r
complete -c pushd -l rsync-path -d 'rsync program on the remote side (run by its shell: `sudo rsync` works); the local one is --rsync-binary' -r
complete -c pushd -l rsync-binary -d 'rsync program to run on this machine (lsyncd\'s rsync.binary) [default: rsync on PATH]; the remote one is --rsync-path' -r -F
complete -c pushd -l rsync-opt -d 'One more argument for rsync, passed through (repeatable)' -r
complete -c pushd -l password-file -d 'Password file for rsync daemon targets' -r -F
complete -c pushd -s p -l port -d 'ssh port' -r
complete -c pushd -s i -l identity -d 'ssh private key' -r -F
complete -c pushd -s o -l ssh-opt -d 'ssh option as for `ssh -o` (repeatable), e.g. StrictHostKeyChecking=yes' -r
complete -c pushd -l exclude -d 'Leave out paths matching PATTERN, gitignore-style, relative to the root: `*.tmp`, `/build/`, `cache/`, `logs/**`, `a/**/b`, `!keep.log` (repeatable; rsync rules like `- *.tmp` or `dir/***` are refused)' -r
complete -c pushd -l excludes -d 'Patterns separated by spaces, as the config file\'s EXCLUDES= key holds them (repeatable; empty: none)' -r
complete -c pushd -l exclude-from -d 'Read patterns from FILE, one per line, `#` comments (repeatable; empty: none, so a unit can pass the config\'s EXCLUDE_FROM= as it is)' -r -F
complete -c pushd -l status-file -d 'Keep a JSON status file at FILE (rewritten atomically on changes, at most once a second, and every 5 s while idle; `syncpipe status` reads it)' -r -F
complete -c pushd -l metrics-file -d 'Keep Prometheus metrics (text format, `syncpipe_` names) at FILE, for node_exporter\'s textfile collector (name it *.prom in its directory)' -r -F
complete -c pushd -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c pushd -l owners -d 'With --serve: keep the pusher\'s owners and set-id bits (when run as root)'
complete -c pushd -l restricted -d 'With --serve: the forced command of a key limited to DIR (keysetup --only pushd:DIR); pushd\'s rsync goes to rrsync -wo DIR'
complete -c pushd -l no-agent -d 'ssh targets: rsync alone, no agent (small files, renames and deletions then cost an rsync run each batch)'
complete -c pushd -l direct -d 'Local targets: copy, rename and remove with plain file system calls instead of rsync (full syncs still use rsync)'
complete -c pushd -l no-init -d 'Skip the full sync at start-up'
complete -c pushd -s n -l dry-run -d 'Change nothing: print what each target would get instead'
complete -c pushd -l allow-empty-source -d 'Allow a full sync from an empty source root to delete on the target'
complete -c pushd -l release-held -d 'Apply, in the start-up transfer, the deletions the guards would hold'
complete -c pushd -l insist -d 'Keep retrying a target whose first transfer fails for good (unknown host, refused or changed key, no rsync there, missing parent directory); without it pushd exits with that failure\'s code (6, 7, 8 or 1) at start, as a target that never worked needs a person'
complete -c pushd -l require-mount -d 'Refuse to sync unless the source root is a mount point'
complete -c pushd -s z -l compress -d 'Compress data on the wire'
complete -c pushd -s c -l checksum -d 'Compare files by checksum, not size and time'
complete -c pushd -l inplace -d 'Update files in place'
complete -c pushd -l partial -d 'Keep partially transferred files'
complete -c pushd -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c pushd -s q -l quiet -d 'Say only warnings and errors'
complete -c pushd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pushd -s V -l version -d 'Print version'
