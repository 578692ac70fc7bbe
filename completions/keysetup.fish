# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_keysetup_global_optspecs
    string join \n p/port= o/ssh-opt= login-key= i/identity= only= from= accept-new host-key= alias= mutual back= back-port= back-only= v/verbose q/quiet log-file= h/help V/version
end

function __fish_keysetup_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_keysetup_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_keysetup_using_subcommand
    set -l cmd (__fish_keysetup_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c keysetup -n "__fish_keysetup_needs_command" -s p -l port -d 'ssh port' -r
complete -c keysetup -n "__fish_keysetup_needs_command" -s o -l ssh-opt -d 'ssh option as for `ssh -o` (repeatable), e.g. StrictHostKeyChecking=yes' -r
complete -c keysetup -n "__fish_keysetup_needs_command" -l login-key -d 'A private key that logs in today, to install or inspect with' -r -F
complete -c keysetup -n "__fish_keysetup_needs_command" -s i -l identity -d 'The kit\'s key [default: ~/.ssh/id_syncpipe_ed25519]' -r -F
complete -c keysetup -n "__fish_keysetup_needs_command" -l only -d 'Allow only rsync:/DIR, rsync-wo:/DIR (push only), rsync-ro:/DIR or bisync:/DIR' -r
complete -c keysetup -n "__fish_keysetup_needs_command" -l from -d 'Accept the key only from these addresses (from="…": CIDR, hosts, !negated)' -r
complete -c keysetup -n "__fish_keysetup_needs_command" -l host-key -d 'Record the host key only if it has this fingerprint (ssh-keygen -lf on the host)' -r
complete -c keysetup -n "__fish_keysetup_needs_command" -l alias -d 'Write a Host NAME block to ~/.ssh/config (host, port, user, this key)' -r
complete -c keysetup -n "__fish_keysetup_needs_command" -l back -d 'How the remote reaches this machine [default: USER@HOSTNAME]' -r
complete -c keysetup -n "__fish_keysetup_needs_command" -l back-port -d 'ssh port of this machine, as the remote reaches it' -r
complete -c keysetup -n "__fish_keysetup_needs_command" -l back-only -d 'Restrict the remote\'s key here (same forms as --only)' -r
complete -c keysetup -n "__fish_keysetup_needs_command" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c keysetup -n "__fish_keysetup_needs_command" -l accept-new -d 'Record the host key on first contact (trust on first use)'
complete -c keysetup -n "__fish_keysetup_needs_command" -l mutual -d 'Also let the remote log in here with its own key (for two-way sync)'
complete -c keysetup -n "__fish_keysetup_needs_command" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c keysetup -n "__fish_keysetup_needs_command" -s q -l quiet -d 'Say only warnings and errors'
complete -c keysetup -n "__fish_keysetup_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c keysetup -n "__fish_keysetup_needs_command" -s V -l version -d 'Print version'
complete -c keysetup -n "__fish_keysetup_needs_command" -a "authorize" -d 'Accept a public key in this account\'s authorized_keys (run on the target)'
complete -c keysetup -n "__fish_keysetup_needs_command" -a "revoke" -d 'Remove exactly the kit\'s line from the remote authorized_keys'
complete -c keysetup -n "__fish_keysetup_needs_command" -a "check" -d 'Say what blocks a login without a password, one line per fault, with the fix'
complete -c keysetup -n "__fish_keysetup_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c keysetup -n "__fish_keysetup_using_subcommand authorize" -l key -d 'The public key file (an id_*.pub)' -r -F
complete -c keysetup -n "__fish_keysetup_using_subcommand authorize" -l only -d 'Allow only rsync:/DIR, rsync-wo:/DIR (push only), rsync-ro:/DIR or bisync:/DIR' -r
complete -c keysetup -n "__fish_keysetup_using_subcommand authorize" -l from -d 'Accept the key only from these addresses (from="…": CIDR, hosts, !negated)' -r
complete -c keysetup -n "__fish_keysetup_using_subcommand authorize" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c keysetup -n "__fish_keysetup_using_subcommand authorize" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c keysetup -n "__fish_keysetup_using_subcommand authorize" -s q -l quiet -d 'Say only warnings and errors'
complete -c keysetup -n "__fish_keysetup_using_subcommand authorize" -s h -l help -d 'Print help'
complete -c keysetup -n "__fish_keysetup_using_subcommand revoke" -s p -l port -d 'ssh port' -r
complete -c keysetup -n "__fish_keysetup_using_subcommand revoke" -s o -l ssh-opt -d 'ssh option as for `ssh -o` (repeatable), e.g. StrictHostKeyChecking=yes' -r
complete -c keysetup -n "__fish_keysetup_using_subcommand revoke" -l login-key -d 'A private key that logs in today, to install or inspect with' -r -F
complete -c keysetup -n "__fish_keysetup_using_subcommand revoke" -s i -l identity -d 'The kit\'s key [default: ~/.ssh/id_syncpipe_ed25519]' -r -F
complete -c keysetup -n "__fish_keysetup_using_subcommand revoke" -l alias -d 'Also remove the Host block NAME from ~/.ssh/config' -r
complete -c keysetup -n "__fish_keysetup_using_subcommand revoke" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c keysetup -n "__fish_keysetup_using_subcommand revoke" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c keysetup -n "__fish_keysetup_using_subcommand revoke" -s q -l quiet -d 'Say only warnings and errors'
complete -c keysetup -n "__fish_keysetup_using_subcommand revoke" -s h -l help -d 'Print help'
complete -c keysetup -n "__fish_keysetup_using_subcommand check" -s p -l port -d 'ssh port' -r
complete -c keysetup -n "__fish_keysetup_using_subcommand check" -s o -l ssh-opt -d 'ssh option as for `ssh -o` (repeatable), e.g. StrictHostKeyChecking=yes' -r
complete -c keysetup -n "__fish_keysetup_using_subcommand check" -l login-key -d 'A private key that logs in today, to install or inspect with' -r -F
complete -c keysetup -n "__fish_keysetup_using_subcommand check" -s i -l identity -d 'The kit\'s key [default: ~/.ssh/id_syncpipe_ed25519]' -r -F
complete -c keysetup -n "__fish_keysetup_using_subcommand check" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c keysetup -n "__fish_keysetup_using_subcommand check" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c keysetup -n "__fish_keysetup_using_subcommand check" -s q -l quiet -d 'Say only warnings and errors'
complete -c keysetup -n "__fish_keysetup_using_subcommand check" -s h -l help -d 'Print help'
complete -c keysetup -n "__fish_keysetup_using_subcommand help; and not __fish_seen_subcommand_from authorize revoke check help" -f -a "authorize" -d 'Accept a public key in this account\'s authorized_keys (run on the target)'
complete -c keysetup -n "__fish_keysetup_using_subcommand help; and not __fish_seen_subcommand_from authorize revoke check help" -f -a "revoke" -d 'Remove exactly the kit\'s line from the remote authorized_keys'
complete -c keysetup -n "__fish_keysetup_using_subcommand help; and not __fish_seen_subcommand_from authorize revoke check help" -f -a "check" -d 'Say what blocks a login without a password, one line per fault, with the fix'
complete -c keysetup -n "__fish_keysetup_using_subcommand help; and not __fish_seen_subcommand_from authorize revoke check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
