complete -c bisync -l prefer -d 'Who wins a conflict: a, b, newer or older. Default: keep both' -r -f -a "a\t''
b\t''
newer\t''
older\t''"
complete -c bisync -l max-delete -d 'Stop before deleting more than N entries (or P% of a replica\'s entries) on either side' -r
complete -c bisync -l exclude -d 'Leave out paths matching GLOB, gitignore-style, relative to the replica roots (`*.tmp`, `/build/`, `cache/`, `!keep.log`); repeatable' -r
complete -c bisync -l exclude-from -d 'Read exclude patterns from FILE, one per line (# comments)' -r -F
complete -c bisync -s d -l delay -d 'With --watch: gather changes this long after the first before a run (a bare number is seconds; 500ms, 2s)' -r
complete -c bisync -l watchd -d 'With --watch: the watchd program for a local replica [default: the watchd next to bisync, else from PATH]' -r
complete -c bisync -l remote-watchd -d 'With --watch: the watchd program on remote hosts' -r
complete -c bisync -l state-dir -d 'Directory for archives and locks' -r -F
complete -c bisync -s p -l port -d 'ssh port' -r
complete -c bisync -s i -l identity -d 'ssh private key' -r -F
complete -c bisync -l ssh-opt -d 'ssh option as for `ssh -o` (repeatable), e.g. StrictHostKeyChecking=yes' -r
complete -c bisync -l remote-bisync -d 'The bisync program on remote hosts' -r
complete -c bisync -l serve -d 'Serve the replica at PATH on stdin/stdout (what bisync runs on the far side of ssh; docs/protocol.md)' -r -F
complete -c bisync -s c -l checksum -d 'Compare file content by hash instead of size, mtime and inode'
complete -c bisync -s n -l dry-run -d 'Print the plan and change nothing'
complete -c bisync -l json -d 'Write the plan and results as JSON lines on stdout (docs/protocol.md)'
complete -c bisync -l exit-changes -d 'Exit 9 instead of 0 when changes were made (for scripts that act on "something changed"; the summary line and --json say it either way)'
complete -c bisync -s w -l watch -d 'Keep running: sync whenever either replica changes (watchd on both)'
complete -c bisync -l owners -d 'With --serve: apply the client\'s owners (as root) and set-id bits. Off by default, so a client (a restricted key used as root) cannot put a setuid-root file into the replica: set-id bits are stripped and nothing is chowned'
complete -c bisync -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c bisync -s q -l quiet -d 'Say only warnings and errors'
complete -c bisync -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bisync -s V -l version -d 'Print version'
