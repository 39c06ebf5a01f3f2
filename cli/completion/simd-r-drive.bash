# simd-r-drive.bash - bash completion for the simd-r-drive command-line tool.
# Installed as share/bash-completion/completions/simd-r-drive (loaded on demand
# by the bash-completion package), or load it by hand: source simd-r-drive.bash
#
# simd-r-drive <storage-file> <command> [args] [options]: the first word is a
# file (or `help`, followed by a command), the second a command; copy/move
# take a target file, import/export a directory; options may come anywhere,
# `--` ends them. Keys are not completed.

_simd_r_drive_commands="read write copy move rename delete compact info metadata check list dump import export"
_simd_r_drive_options="--key-hex --json --buffer-size --force --layout --quiet --detailed --help --version"
_simd_r_drive_sizes="4096 32K 64K 1MiB 8MiB 64MiB"
_simd_r_drive_layouts="aligned64 unaligned"

_simd_r_drive() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local prev=""
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    COMPREPLY=()

    # The value of -b/--buffer-size, also as --buffer-size=VALUE ('=' is a
    # word of its own in COMP_WORDS).
    if [[ $prev == -b || $prev == --buffer-size ]] ||
        { [[ $prev == = ]] && ((COMP_CWORD > 1)) && [[ ${COMP_WORDS[COMP_CWORD - 2]} == --buffer-size ]]; }; then
        COMPREPLY=($(compgen -W "$_simd_r_drive_sizes" -- "$cur"))
        return 0
    fi
    if [[ $prev == --layout ]] ||
        { [[ $prev == = ]] && ((COMP_CWORD > 1)) && [[ ${COMP_WORDS[COMP_CWORD - 2]} == --layout ]]; }; then
        COMPREPLY=($(compgen -W "$_simd_r_drive_layouts" -- "$cur"))
        return 0
    fi

    # Positional words before the cursor, without options and option values.
    local -a words=()
    local i word end_of_options=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if ((!end_of_options)); then
            case $word in
            --) end_of_options=1; continue ;;
            -b | --buffer-size | --layout) # and its value, also written "--opt=VALUE"
                ((i++))
                [[ ${COMP_WORDS[i]} == = ]] && ((i++))
                continue
                ;;
            -*) continue ;;
            esac
        fi
        words+=("$word")
    done

    if ((!end_of_options)) && [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$_simd_r_drive_options" -- "$cur"))
        return 0
    fi

    case ${#words[@]} in
    0) # the storage file, or `help COMMAND`
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur") $(compgen -W "help" -- "$cur"))
        ;;
    1) # the command
        COMPREPLY=($(compgen -W "$_simd_r_drive_commands" -- "$cur"))
        ;;
    *)
        local command=${words[1]} argn=$((${#words[@]} - 2))
        case $command in
        copy | move) # KEY TARGET
            if ((argn == 1)); then
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -f -- "$cur"))
            fi
            ;;
        import | export) # DIR [KEY...]
            if ((argn == 0)); then
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -d -- "$cur"))
            fi
            ;;
        esac
        ;;
    esac
    return 0
}

complete -F _simd_r_drive simd-r-drive
