complete -c watchd -l events -d 'Which content changes to report: close_write (a file once, when its writer closes it), modify (every write) or all. Creates, deletes, moves and attribute changes are always reported' -r -f -a "close_write\t'A file is reported once, when its writer closes it (the default: a consumer never copies a half-written file because of our event)'
modify\t'Every write(2), as it happens (noisy, but sees files held open)'
all\t'Both'"
complete -c watchd -l backend -d 'How to watch: inotify (a watch per directory, any user), fanotify (one mark per file system: instant set-up and no watch limit; needs root, Linux 5.17+ and a file system with file handles; every writer on that file system, also outside ROOT, then pays for the mark\'s events), or auto (fanotify when it can, else inotify; stderr and the header say which)' -r -f -a "auto\t'fanotify when this process, kernel and file system allow it, else inotify'
inotify\t'A watch on every directory (any user, any file system)'
fanotify\t'One mark per file system (root, Linux 5.17+, file systems with file handles)'"
complete -c watchd -l exclude -d 'Leave out paths matching PATTERN, gitignore-style, relative to the root: `*.tmp`, `/build/`, `cache/`, `logs/**`, `a/**/b`, `!keep.log` (repeatable; rsync rules like `- *.tmp` or `dir/***` are refused)' -r
complete -c watchd -l excludes -d 'Patterns separated by spaces, as the config file\'s EXCLUDES= key holds them (repeatable; empty: none)' -r
complete -c watchd -l exclude-from -d 'Read patterns from FILE, one per line, `#` comments (repeatable; empty: none, so a unit can pass the config\'s EXCLUDE_FROM= as it is)' -r -F
complete -c watchd -l listen -d 'Serve the stream on a unix socket at PATH instead of stdout: any number of readers (`batchd --connect PATH`), each resuming where it left off while the backlog holds it. A socket passed by systemd (a .socket unit) is used the same way' -r -F
complete -c watchd -l backlog -d 'How much a --listen writer keeps for readers that reconnect: a record count (100000) or a size (64M). A reader further behind is told to do a full sync' -r
complete -c watchd -l status-file -d 'Keep a JSON status file at FILE (rewritten atomically on changes, at most once a second, and every 5 s while idle; `syncpipe status` reads it)' -r -F
complete -c watchd -l metrics-file -d 'Keep Prometheus metrics (text format, `syncpipe_` names) at FILE, for node_exporter\'s textfile collector (name it *.prom in its directory)' -r -F
complete -c watchd -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c watchd -l wait -d 'If ROOT does not exist yet (a disk mounted late at boot), wait for it instead of exiting with code 3'
complete -c watchd -l require-mount -d 'ROOT must be a mount point; with --wait, wait until it is mounted. Guards against watching the empty directory under an unmounted disk'
complete -c watchd -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c watchd -s q -l quiet -d 'Say only warnings and errors'
complete -c watchd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c watchd -s V -l version -d 'Print version'
