#!/usr/bin/env bash
# install_test.sh - checks what a user of an installed simdr relies on, one
# ctest case per call (tests/install/CMakeLists.txt registers them, label
# "install"):
#   setup        cmake --install of the build into PREFIX (the fixture)
#   pkgconfig    README's C example built with README's `cc ... pkg-config` line:
#                rpath, LD_LIBRARY_PATH, static archive, and a moved prefix
#   cmake        README's find_package(simdr) lines in a tiny consumer project,
#                simdr::simdr and simdr::simdr_static, from a moved prefix
#   version      header macros, simdr_version(), simdr.pc, CMake package,
#                SONAME, simd-r-drive --version, man page, CHANGELOG agree
#   man          the installed man page renders without warnings and names
#                every command and option of `simd-r-drive --help`
#   completion   the installed bash completion loads and completes commands,
#                options, files; it offers every command and option of --help
#   library_only configure without cmocka: a clear message when tests are on,
#                success with SIMDR_BUILD_TESTS=OFF and as a subproject
#   no_shared    a copy of the tree without ../shared: interop tests skip
# Usage: install_test.sh CASE --source DIR --build DIR --prefix DIR --libdir REL
#        --version X.Y.Z [--cc CC] [--san FLAGS] [--work DIR]
set -euo pipefail

case_name=$1
shift
source_dir="" build_dir="" prefix="" libdir="lib" version="" cc="cc" san="" work_root=""
while [ $# -gt 0 ]; do
    case $1 in
    --source) source_dir=$2 ;;
    --build) build_dir=$2 ;;
    --prefix) prefix=$2 ;;
    --libdir) libdir=$2 ;;
    --version) version=$2 ;;
    --cc) cc=$2 ;;
    --san) san=$2 ;;
    --work) work_root=$2 ;;
    *) echo "install_test.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done

fail() {
    echo "install_test.sh $case_name: FAIL: $*" >&2
    exit 1
}
note() { echo "install_test.sh $case_name: $*"; }

work=$(mktemp -d "${work_root:-${TMPDIR:-/tmp}}/simdr-install-$case_name.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Compiler flags a consumer needs to link against a sanitized build.
extra_cflags=""
if [ -n "$san" ]; then
    extra_cflags="-fsanitize=$san -fno-omit-frame-pointer"
fi

# Every ```c block of README.md that is a whole program (defines main) goes
# to DIR/readme_N.c; prints how many.
extract_readme_programs() {
    awk -v dir="$1" '
        /^```c[ \t]*$/ { inblock = 1; text = ""; next }
        inblock && /^```/ {
            inblock = 0
            if (text ~ /int main\(/) { n++; f = dir "/readme_" n ".c"; printf "%s", text > f; close(f) }
            next
        }
        inblock { text = text $0 "\n" }
        END { print n + 0 }' "$source_dir/README.md"
}

# The first ```cmake block of README.md that calls find_package(simdr).
extract_readme_cmake() {
    awk '
        /^```cmake[ \t]*$/ { inblock = 1; text = ""; next }
        inblock && /^```/ { inblock = 0; if (!done && text ~ /find_package\(simdr/) { printf "%s", text; done = 1 } next }
        inblock { text = text $0 "\n" }' "$source_dir/README.md"
}

# The README's command line that builds app.c with pkg-config.
readme_cc_line() {
    grep -m1 -E '^cc app\.c .*pkg-config [^)]*simdr' "$source_dir/README.md" || true
}

# run_example BINARY: runs it in a fresh directory; it must exit 0, print
# something on stdout and nothing on stderr (the README example prints the
# value it stored and read back).
run_example() {
    local bin=$1 dir
    dir=$(mktemp -d "$work/run.XXXXXX")
    (cd "$dir" && "$bin" >stdout 2>stderr) || fail "$bin exited $? (stderr: $(cat "$dir/stderr"))"
    [ -s "$dir/stdout" ] || fail "$bin printed nothing"
    [ ! -s "$dir/stderr" ] || fail "$bin wrote to stderr: $(cat "$dir/stderr")"
    note "$(basename "$bin") printed: $(head -c 200 "$dir/stdout")"
}

# needs_libsimdr BINARY: 0 if the binary depends on libsimdr.so.
needs_libsimdr() { readelf -d "$1" | grep -q 'NEEDED.*libsimdr\.so'; }

# loads_from BINARY LIBDIR: the libsimdr.so.N the loader picks for BINARY
# (with the current environment) is the one in LIBDIR.
loads_from() {
    local got
    got=$(ldd "$1" | sed -n 's/^[[:space:]]*libsimdr\.so[^ ]* => \([^ ]*\) .*/\1/p')
    [ -n "$got" ] || fail "$1: the loader does not find libsimdr ($(ldd "$1" | grep simdr))"
    [ "$(realpath "$(dirname "$got")")" = "$(realpath "$2")" ] ||
        fail "$1 loads $got, not the library in $2"
}

require_prefix() {
    [ -f "$prefix/$libdir/pkgconfig/simdr.pc" ] || fail "no installed tree in $prefix (the install_setup fixture did not run?)"
}

case $case_name in
setup)
    rm -rf "$prefix"
    cmake --install "$build_dir" --prefix "$prefix" >"$work/install.log" || {
        cat "$work/install.log"
        fail "cmake --install failed"
    }
    for f in "$libdir/libsimdr.so.${version%%.*}" "$libdir/libsimdr.a" include/simdr.h \
        "$libdir/pkgconfig/simdr.pc" "$libdir/cmake/simdr/simdrConfig.cmake" \
        "$libdir/cmake/simdr/simdrConfigVersion.cmake" "$libdir/cmake/simdr/simdrTargets.cmake" \
        share/doc/simdr/LICENSE; do
        [ -e "$prefix/$f" ] || fail "cmake --install did not install $f"
    done
    note "installed into $prefix"
    ;;

pkgconfig)
    require_prefix
    cp -a "$prefix" "$work/prefix"
    p=$work/prefix
    n=$(extract_readme_programs "$work")
    [ "$n" -ge 1 ] || fail "README.md has no \`\`\`c block with a main() to test"
    cc_line=$(readme_cc_line)
    [ -n "$cc_line" ] || fail "README.md has no 'cc app.c ... pkg-config ...' line"
    note "README command: $cc_line"
    export PKG_CONFIG_PATH="$p/$libdir/pkgconfig"
    unset PKG_CONFIG_LIBDIR LD_LIBRARY_PATH
    incdir=$(pkg-config --variable=includedir simdr)
    [ "$(realpath "$incdir")" = "$(realpath "$p/include")" ] ||
        fail "simdr.pc's includedir is $incdir, not under the prefix $p"
    for i in $(seq 1 "$n"); do
        src=$work/readme_$i.c
        # 1. The README line itself, with an rpath: runs with no environment.
        (cd "$work" && cp "$src" app.c && rm -f a.out &&
            eval "${cc_line/#cc /$cc $extra_cflags }") || fail "README's cc line failed for example $i"
        needs_libsimdr "$work/a.out" || fail "a.out is not linked to libsimdr.so"
        loads_from "$work/a.out" "$p/$libdir"
        mv "$work/a.out" "$work/app_rpath_$i"
        run_example "$work/app_rpath_$i"
        # 2. Without the rpath, found through LD_LIBRARY_PATH.
        $cc $extra_cflags "$src" $(pkg-config --cflags --libs simdr) -o "$work/app_plain_$i" ||
            fail "pkg-config build without rpath failed"
        LD_LIBRARY_PATH="$(pkg-config --variable=libdir simdr)" loads_from "$work/app_plain_$i" "$p/$libdir"
        LD_LIBRARY_PATH="$(pkg-config --variable=libdir simdr)" run_example "$work/app_plain_$i"
        # 3. Statically: the archive and its private dependencies from simdr.pc.
        $cc $extra_cflags "$src" $(pkg-config --cflags simdr) "$(pkg-config --variable=libdir simdr)/libsimdr.a" \
            -Wl,--as-needed $(pkg-config --static --libs simdr) -o "$work/app_static_$i" ||
            fail "static link with pkg-config --static --libs failed"
        ! needs_libsimdr "$work/app_static_$i" || fail "app_static depends on libsimdr.so"
        run_example "$work/app_static_$i"
    done
    # 4. The installed tree moved elsewhere: simdr.pc follows it.
    mv "$p" "$work/moved"
    export PKG_CONFIG_PATH="$work/moved/$libdir/pkgconfig"
    [ "$(realpath "$(pkg-config --variable=libdir simdr)")" = "$(realpath "$work/moved/$libdir")" ] ||
        fail "simdr.pc does not follow a moved prefix: libdir=$(pkg-config --variable=libdir simdr)"
    (cd "$work" && cp readme_1.c app.c && rm -f a.out && eval "${cc_line/#cc /$cc $extra_cflags }") ||
        fail "README's cc line failed against a moved prefix"
    loads_from "$work/a.out" "$work/moved/$libdir"
    run_example "$work/a.out"
    note "PASS: $n README example(s) built with pkg-config (rpath, LD_LIBRARY_PATH, static) and from a moved prefix"
    ;;

cmake)
    require_prefix
    cp -a "$prefix" "$work/installed" && mv "$work/installed" "$work/moved"
    snippet=$(extract_readme_cmake)
    [ -n "$snippet" ] || fail "README.md has no \`\`\`cmake block with find_package(simdr"
    n=$(extract_readme_programs "$work")
    [ "$n" -ge 1 ] || fail "README.md has no C program"
    mkdir "$work/consumer"
    cp "$work/readme_1.c" "$work/consumer/app.c"
    {
        echo "cmake_minimum_required(VERSION 3.18)"
        echo "project(simdr_consumer C)"
        echo "$snippet"
        echo "add_executable(app_static app.c)"
        echo "target_link_libraries(app_static PRIVATE simdr::simdr_static)"
        echo 'file(WRITE ${CMAKE_BINARY_DIR}/found_version.txt "${simdr_VERSION}")'
    } >"$work/consumer/CMakeLists.txt"
    note "consumer project:"
    cat "$work/consumer/CMakeLists.txt"
    cmake -S "$work/consumer" -B "$work/consumer/build" -DCMAKE_PREFIX_PATH="$work/moved" \
        -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$extra_cflags" >"$work/configure.log" 2>&1 || {
        cat "$work/configure.log"
        fail "configuring the find_package(simdr) consumer failed"
    }
    cmake --build "$work/consumer/build" >"$work/build.log" 2>&1 || {
        cat "$work/build.log"
        fail "building the find_package(simdr) consumer failed"
    }
    [ "$(cat "$work/consumer/build/found_version.txt")" = "$version" ] ||
        fail "find_package(simdr) found version $(cat "$work/consumer/build/found_version.txt"), expected $version"
    needs_libsimdr "$work/consumer/build/app" || fail "app (simdr::simdr) is not linked to libsimdr.so"
    loads_from "$work/consumer/build/app" "$work/moved/$libdir"
    ! needs_libsimdr "$work/consumer/build/app_static" || fail "app_static (simdr::simdr_static) depends on libsimdr.so"
    run_example "$work/consumer/build/app"
    run_example "$work/consumer/build/app_static"
    # A version the package must refuse: another major.
    mkdir "$work/wrong"
    printf 'cmake_minimum_required(VERSION 3.18)\nproject(w C)\nfind_package(simdr %s QUIET)\nif(simdr_FOUND)\n  message(FATAL_ERROR "accepted")\nendif()\n' \
        "$((${version%%.*} + 1)).0" >"$work/wrong/CMakeLists.txt"
    cmake -S "$work/wrong" -B "$work/wrong/build" -DCMAKE_PREFIX_PATH="$work/moved" >/dev/null 2>&1 ||
        fail "find_package(simdr $((${version%%.*} + 1)).0) accepted version $version"
    note "PASS: README's find_package(simdr) lines built app (shared) and app_static from a moved prefix"
    ;;

version)
    require_prefix
    export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
    IFS=. read -r major minor patch <<<"$version"
    h=$prefix/include/simdr.h
    for part in MAJOR:$major MINOR:$minor PATCH:$patch; do
        grep -qE "^#define SIMDR_VERSION_${part%%:*} ${part#*:}\$" "$h" ||
            fail "simdr.h: SIMDR_VERSION_${part%%:*} is not ${part#*:}"
    done
    grep -qE "^#define SIMDR_VERSION_STRING \"$version\"\$" "$h" || fail "simdr.h: SIMDR_VERSION_STRING is not \"$version\""
    cat >"$work/v.c" <<'C'
#include <simdr.h>
#include <stdio.h>
#include <string.h>
#define STR2(x) #x
#define STR(x) STR2(x)
int main(void) {
    const char *numbers = STR(SIMDR_VERSION_MAJOR) "." STR(SIMDR_VERSION_MINOR) "." STR(SIMDR_VERSION_PATCH);
    if (strcmp(numbers, SIMDR_VERSION_STRING) != 0) {
        printf("macros disagree: %s vs %s\n", numbers, SIMDR_VERSION_STRING);
        return 1;
    }
    printf("%s %s\n", SIMDR_VERSION_STRING, simdr_version());
    return 0;
}
C
    $cc $extra_cflags "$work/v.c" $(pkg-config --cflags --libs simdr) -Wl,-rpath,"$prefix/$libdir" -o "$work/v" ||
        fail "building the version probe failed"
    read -r header_v lib_v < <("$work/v") || fail "version probe: $("$work/v")"
    [ "$header_v" = "$version" ] || fail "SIMDR_VERSION_STRING is $header_v, project version $version"
    [ "$lib_v" = "$version" ] || fail "simdr_version() returns $lib_v, project version $version"
    pc_v=$(pkg-config --modversion simdr)
    [ "$pc_v" = "$version" ] || fail "simdr.pc says $pc_v, project version $version"
    soname=$(readelf -d "$prefix/$libdir/libsimdr.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
    [ "$soname" = "libsimdr.so.$major" ] || fail "SONAME is $soname, expected libsimdr.so.$major"
    grep -q "set(PACKAGE_VERSION \"$version\")" "$prefix/$libdir/cmake/simdr/simdrConfigVersion.cmake" ||
        fail "simdrConfigVersion.cmake does not say $version"
    if [ -x "$prefix/bin/simd-r-drive" ]; then
        cli_v=$("$prefix/bin/simd-r-drive" --version) || fail "simd-r-drive --version exited $?"
        echo "$cli_v" | grep -qF "$version" || fail "simd-r-drive --version printed '$cli_v', not $version"
        others=$(echo "$cli_v" | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | grep -vxF "$version" || true)
        [ -z "$others" ] || fail "simd-r-drive --version names other versions: '$cli_v'"
        grep -q "^\.TH .*\"simdr $version\"" "$prefix/share/man/man1/simd-r-drive.1" ||
            fail "the man page's .TH line does not say simdr $version"
    else
        note "simd-r-drive not installed (SIMDR_BUILD_CLI=OFF): its --version is not checked"
    fi
    if [ -x "$prefix/bin/simdr-server" ]; then
        grep -q "^\.TH .*\"simdr $version\"" "$prefix/share/man/man1/simdr-server.1" ||
            fail "simdr-server's man page is not installed or its .TH line does not say simdr $version"
    fi
    top=$(grep -m1 -oE '^## \[[0-9]+\.[0-9]+\.[0-9]+\]' "$source_dir/CHANGELOG.md" | tr -d '#[] ') ||
        fail "CHANGELOG.md has no '## [X.Y.Z]' entry"
    [ "$top" = "$version" ] || fail "CHANGELOG.md's newest entry is $top, project version $version"
    note "PASS: $version in simdr.h, simdr_version(), simdr.pc, simdrConfigVersion.cmake, SONAME libsimdr.so.$major, --version, man page, CHANGELOG.md"
    ;;

man | completion)
    require_prefix
    cli=$prefix/bin/simd-r-drive
    [ -x "$cli" ] || fail "simd-r-drive is not installed"
    # The commands and long options `simd-r-drive --help` lists.
    help=$("$cli" --help)
    commands=$(echo "$help" | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit }
        on && /^  [a-z]/ { print $1 } on && /alias: / { sub(/.*alias: /, ""); sub(/\).*/, ""); print }')
    options=$(echo "$help" | grep -oE -- '--[a-z][a-z-]+' | sort -u)
    [ -n "$commands" ] && [ -n "$options" ] || fail "could not read commands and options from --help"
    if [ "$case_name" = man ]; then
        page=$prefix/share/man/man1/simd-r-drive.1
        [ -f "$page" ] || fail "the man page was not installed"
        if command -v groff >/dev/null; then
            groff -man -ww -z "$page" 2>"$work/groff.err" || fail "groff failed: $(cat "$work/groff.err")"
            [ ! -s "$work/groff.err" ] || fail "groff warnings: $(cat "$work/groff.err")"
        fi
        if command -v man >/dev/null; then
            LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" >"$work/page.txt" 2>"$work/man.err" ||
                fail "man -l failed: $(cat "$work/man.err")"
            [ ! -s "$work/man.err" ] || fail "man -l warnings: $(cat "$work/man.err")"
        fi
        command -v groff >/dev/null || command -v man >/dev/null || {
            echo "install_test.sh man: SKIPPED: neither groff nor man is installed (apt-get install groff-base man-db)"
            exit 77
        }
        for word in $commands $options; do
            roff=${word//-/\\-}
            grep -qF -- "$roff" "$page" || fail "the man page does not mention '$word' (listed by --help)"
        done
        note "PASS: man page renders without warnings and names $(echo $commands | wc -w) commands and $(echo $options | wc -w) options"
    else
        script=$prefix/share/bash-completion/completions/simd-r-drive
        [ -f "$script" ] || fail "the bash completion was not installed"
        mkdir -p "$work/dir/sub" && touch "$work/dir/store.bin"
        complete_words() { # complete_words WORD... : COMPREPLY for the last word
            (cd "$work/dir" && bash --norc --noprofile -c '
                source "$0" || exit 3
                complete -p simd-r-drive >/dev/null || exit 4
                COMP_WORDS=(simd-r-drive "$@"); COMP_CWORD=$#
                _simd_r_drive; echo "${COMPREPLY[*]}"' "$script" "$@")
        }
        expect() { # expect "WANTED" WORD...
            local want=$1 got
            shift
            got=$(complete_words "$@") || fail "the completion script failed to load or run ($?)"
            [ "$got" = "$want" ] || fail "completing 'simd-r-drive $*' gave '$got', expected '$want'"
        }
        expect "read rename" store.bin re
        expect "--json" store.bin info --js
        expect "store.bin" st
        expect "sub" store.bin import s
        expect "store.bin" store.bin copy key st
        expect "compact" store.bin --key-hex comp
        expect "export" store.bin --buffer-size = 1M ex
        expect "sub" store.bin -b 1M export s
        all_commands=$(complete_words store.bin "")
        first_words=$(complete_words "")
        all_options=$(complete_words store.bin --)
        all_options="$all_options $(complete_words store.bin -)"
        for word in $commands; do
            if [ "$word" = help ]; then # simd-r-drive help COMMAND: offered first
                [[ " $first_words " == *" help "* ]] || fail "completion does not offer 'help' as the first word"
                [ "$(complete_words help re)" = "read rename" ] || fail "completion after 'help' does not offer commands"
                continue
            fi
            [[ " $all_commands " == *" $word "* ]] || fail "completion does not offer command '$word' (listed by --help)"
        done
        for word in $options; do
            [[ " $all_options " == *" $word "* ]] || fail "completion does not offer option '$word' (listed by --help)"
        done
        note "PASS: completion loads, completes commands, options, files, directories; knows all of --help"
    fi
    ;;

library_only)
    # pkg-config sees xxhash, ISA-L and zlib but not cmocka.
    mkdir "$work/pc"
    for m in libxxhash libisal zlib; do
        ln -s "$(pkg-config --variable=pcfiledir "$m")/$m.pc" "$work/pc/$m.pc"
    done
    export PKG_CONFIG_LIBDIR="$work/pc"
    unset PKG_CONFIG_PATH
    ! pkg-config --exists cmocka || fail "cmocka still visible to pkg-config"
    # 1. Top level with the tests on by default: a clear message, not a pkg-config dump.
    if cmake -S "$source_dir" -B "$work/top" >"$work/top.log" 2>&1; then
        fail "configure without cmocka succeeded with the tests on"
    fi
    grep -q "libcmocka-dev" "$work/top.log" && grep -q -- "-DSIMDR_BUILD_TESTS=OFF" "$work/top.log" || {
        cat "$work/top.log"
        fail "the missing-cmocka message names neither libcmocka-dev nor -DSIMDR_BUILD_TESTS=OFF"
    }
    note "without cmocka, configure says: $(grep -A3 'cmocka was not found' "$work/top.log" | tr -s ' \n' ' ')"
    # 2. Top level with the tests off.
    cmake -S "$source_dir" -B "$work/off" -DSIMDR_BUILD_TESTS=OFF >"$work/off.log" 2>&1 || {
        cat "$work/off.log"
        fail "configure with -DSIMDR_BUILD_TESTS=OFF failed without cmocka"
    }
    # 3. As a subproject: tests default to OFF; the parent links simdr::simdr_static
    #    (the generate step fails if a target its interface names is not visible).
    mkdir -p "$work/parent"
    ln -s "$source_dir" "$work/parent/simdr"
    cat >"$work/parent/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(parent C)
add_subdirectory(simdr)
if(SIMDR_BUILD_TESTS)
  message(FATAL_ERROR "SIMDR_BUILD_TESTS is ON in a subproject")
endif()
file(WRITE ${CMAKE_BINARY_DIR}/app.c "#include <simdr.h>\nint main(void) { return simdr_version()[0] == 0; }\n")
add_executable(app_static ${CMAKE_BINARY_DIR}/app.c)
target_link_libraries(app_static PRIVATE simdr::simdr_static)
add_executable(app ${CMAKE_BINARY_DIR}/app.c)
target_link_libraries(app PRIVATE simdr::simdr)
CM
    cmake -S "$work/parent" -B "$work/parent/build" >"$work/sub.log" 2>&1 || {
        cat "$work/sub.log"
        fail "configuring simdr as a subproject without cmocka failed"
    }
    ! grep -q "test_basic" "$work/parent/build/simdr/tests/unit/CTestTestfile.cmake" 2>/dev/null ||
        fail "the subproject registered simdr's tests"
    note "PASS: no cmocka: clear message with tests on; configures with SIMDR_BUILD_TESTS=OFF and as a subproject (tests off)"
    ;;

no_shared)
    # A copy of the tracked tree with no sibling shared/ folder.
    mkdir "$work/clone"
    if git -C "$source_dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$source_dir" && git ls-files -z --cached --others --exclude-standard |
            tar --null -T - -cf -) | tar -C "$work/clone" -xf -
    else
        tar -C "$source_dir" --exclude='./build*' -cf - . | tar -C "$work/clone" -xf -
    fi
    [ ! -e "$work/shared" ] || fail "$work/shared exists"
    cmake -S "$work/clone" -B "$work/clone/build" -DSIMDR_BUILD_CLI=ON >"$work/configure.log" 2>&1 || {
        cat "$work/configure.log"
        fail "configure of a clone without ../shared failed"
    }
    grep -q "interop tests will be reported as skipped" "$work/configure.log" ||
        fail "configure did not say that the interop tests will be skipped"
    # The interop tests need no build: they are registered as skips.
    ctest --test-dir "$work/clone/build" -R 'interop' -V >"$work/ctest.log" 2>&1 || {
        cat "$work/ctest.log"
        fail "ctest -R interop failed in a clone without ../shared"
    }
    cat "$work/ctest.log"
    for t in test_interop cli_interop; do
        grep -qE "$t .*Skipped" "$work/ctest.log" || fail "$t is not reported as Skipped"
        grep -q "$t: SKIPPED: the Rust-written interop files are not in" "$work/ctest.log" ||
            fail "$t does not print why it is skipped"
    done
    note "PASS: without ../shared, test_interop and cli_interop are reported as skipped with the reason"
    ;;

*)
    fail "unknown case"
    ;;
esac
