complete -c bisync -l prefer -d 'Who wins a conflict, and on a first sync (no archive) which version of a file that differs counts: a, b, newer, older, larger or smaller. Default: keep both (the loser as NAME.conflict-…). A first sync still deletes nothing' -r -f -a "a\t''
b\t''
newer\t''
older\t''
larger\t''
smaller\t''"
complete -c bisync -l max-delete -d 'Stop before deleting more than N entries (or P% of a replica\'s entries) on either side' -r
complete -c bisync -l sentinel -d 'Refuse to run unless NAME (relative to each root, not excluded) exists on both replicas: proof both are mounted and the right ones' -r -F
complete -c bisync -l backup-dir-a -d 'Keep what a sync replaces or deletes on replica A: hard-linked to DIR/<UTC time of the run>/<path>, DIR relative to A\'s root and left out of the sync on both sides' -r -F
complete -c bisync -l backup-dir-b -d 'The same for replica B (which may be remote)' -r -F
complete -c bisync -l backup-keep -d 'Delete backup run folders older than DURATION before a run changes anything (30days, 12h) [default: keep all]' -r
complete -c bisync -l exclude -d 'Leave out paths matching PATTERN, gitignore-style, relative to the root: `*.tmp`, `/build/`, `cache/`, `logs/**`, `a/**/b`, `!keep.log` (repeatable; rsync rules like `- *.tmp` or `dir/***` are refused)' -r
complete -c bisync -l excludes -d 'Patterns separated by spaces, as the config file\'s EXCLUDES= key holds them (repeatable; empty: none)' -r
complete -c bisync -l exclude-from -d 'Read patterns from FILE, one per line, `#` comments (repeatable; empty: none, so a unit can pass the config\'s EXCLUDE_FROM= as it is)' -r -F
complete -c bisync -s d -l delay -d 'With --watch: gather changes this long after the first before a run (a bare number is seconds; 500ms, 2s)' -r
complete -c bisync -l watchd -d 'With --watch: the watchd program for a local replica [default: the watchd next to bisync, else from PATH]' -r
complete -c bisync -l remote-watchd -d 'With --watch: the watchd program on remote hosts' -r
complete -c bisync -l state-dir -d 'Directory for archives and locks' -r -F
complete -c bisync -s p -l port -d 'ssh port' -r
complete -c bisync -s i -l identity -d 'ssh private key' -r -F
complete -c bisync -s o -l ssh-opt -d 'ssh option as for `ssh -o` (repeatable), e.g. StrictHostKeyChecking=yes' -r
complete -c bisync -l remote-bisync -d 'The bisync program on remote hosts' -r
complete -c bisync -l serve -d 'Serve the replica at PATH on stdin/stdout (what bisync runs on the far side of ssh; docs/protocol.md)' -r -F
complete -c bisync -l status-file -d 'Keep a JSON status file at FILE (rewritten atomically on changes, at most once a second, and every 5 s while idle; `syncpipe status` reads it)' -r -F
complete -c bisync -l metrics-file -d 'Keep Prometheus metrics (text format, `syncpipe_` names) at FILE, for node_exporter\'s textfile collector (name it *.prom in its directory)' -r -F
complete -c bisync -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c bisync -s c -l checksum -d 'Compare file content by hash instead of size, mtime and inode'
complete -c bisync -l size-only -d 'Compare files by size only: modification times and inodes are not trusted (replicas on filesystems that lose or shift times). A change that keeps the size is not seen'
complete -c bisync -l normalization -d 'Names that differ only in Unicode normalization (NFC/NFD, e.g. from macOS) are the same file when each replica has one spelling; each keeps its own. Without it they are reported and synced as distinct'
complete -c bisync -l case-insensitive -d 'Names that differ only in case are the same file when each replica has one spelling (a replica on a case-insensitive filesystem)'
complete -c bisync -l force -d 'Go ahead although (nearly) every file on one replica changed since the last sync (at least 90% of at least 10 files, e.g. a restored backup or a touched tree); without it such a run stops with exit 13'
complete -c bisync -s n -l dry-run -d 'Print the plan and change nothing'
complete -c bisync -l json -d 'Write the plan and results as JSON lines on stdout (docs/protocol.md)'
complete -c bisync -l exit-changes -d 'Exit 9 instead of 0 when changes were made (for scripts that act on "something changed"; the summary line and --json say it either way)'
complete -c bisync -s w -l watch -d 'Keep running: sync whenever either replica changes (watchd on both)'
complete -c bisync -l owners -d 'With --serve: apply the client\'s owners (as root) and set-id bits. Off by default, so a client (a restricted key used as root) cannot put a setuid-root file into the replica: set-id bits are stripped and nothing is chowned'
complete -c bisync -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c bisync -s q -l quiet -d 'Say only warnings and errors'
complete -c bisync -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bisync -s V -l version -d 'Print version'
