# syncpipe: let `pushd` mean syncpipe's pushd where a directory stack cannot
# be meant, and keep the shell's builtin everywhere else.
#
# bash and zsh have a `pushd` builtin that wins over any program on PATH, so
# `watchd /data | batchd -d 15 | pushd host:/dst` would run the builtin (bash:
# "No such file or directory"; with an existing directory it silently
# "succeeds" and the stream is lost; zsh also changes the shell's directory).
# `env pushd ...` always runs the program; this function makes the plain
# spelling work too, at interactive bash and zsh prompts. Scripts keep the
# builtin untouched (no function can help them: write `env pushd` there).
#
# The program runs when stdin is not a terminal (the end of a pipeline: the
# builtin never reads stdin), or when the first argument is a sync target or
# a long option (`host:/path`, `host::module`, `rsync://…`, `--…`).
# `pushd DIR`, `pushd +N`, `pushd -n DIR` and plain `pushd` at a terminal stay
# the builtin.
#
# `make install` puts this file where Debian's shells read it:
#   /etc/bash_completion.d/syncpipe-pushd  bash with bash-completion (login
#       shells through /etc/profile.d/bash_completion.sh, other interactive
#       shells through the stock ~/.bashrc); loaded after bash-completion's
#       own `complete -F _cd pushd`, so pushd's flags complete (the clap
#       completion follows this text in that file).
#   /etc/profile.d/syncpipe-pushd.sh  bash login shells without bash-completion.
#   $(PREFIX)/share/syncpipe/pushd-function.sh  sourced by one marked line in
#       /etc/zsh/zshrc (zsh reads no drop-in directory); bash users without
#       either of the above add `. THAT_PATH` to ~/.bashrc.
# Only bash and zsh define the function (dash and other shells that read
# /etc/profile.d have no pushd builtin to fix).
if [ -n "${BASH_VERSION-}${ZSH_VERSION-}" ]; then
    case $- in
    *i*)
        pushd() {
            if [ ! -t 0 ]; then
                command env pushd "$@"
                return
            fi
            case "${1-}" in
            --* | *:*) command env pushd "$@" ;;
            *) builtin pushd "$@" ;;
            esac
        }
        ;;
    esac
fi
