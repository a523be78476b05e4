"""The local file system that make run's driver writes its checkpoints with
(jvm/driver, bin/driver-jar): Hadoop's, but setting permissions without forking `chmod`."""

import stat

FORKLESS = "io.stedi.hadoop.ForklessLocalFileSystem"


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def hadoop_fs(spark, class_name: str):
    """A fresh instance of a local file system class, on the session's Hadoop settings."""
    constructor = spark._jvm
    for name in class_name.split("."):
        constructor = getattr(constructor, name)
    fs = constructor()
    fs.initialize(spark._jvm.java.net.URI("file:///"), spark._jsc.hadoopConfiguration())
    return fs


def written_modes(spark, fs, folder) -> dict[str, int]:
    """What a checkpoint's writes leave: a new folder, a new file (and its checksum file),
    and a file whose permissions are set afterwards."""
    path = spark._jvm.org.apache.hadoop.fs.Path
    folder.mkdir()
    assert fs.mkdirs(path(str(folder / "offsets")))
    fs.create(path(str(folder / "offsets" / "0")), True).close()
    fs.create(path(str(folder / "private")), True).close()
    fs.setPermission(
        path(str(folder / "private")),
        spark._jvm.org.apache.hadoop.fs.permission.FsPermission(0o600),
    )
    return {str(file.relative_to(folder)): mode(file) for file in sorted(folder.rglob("*"))}


def test_the_session_writes_local_files_with_it(spark):
    """`make unit` and `make install` build it; the tests' session, like bin/submit's local
    drivers, has it on its class path."""
    jvm = spark._jvm
    fs = jvm.org.apache.hadoop.fs.FileSystem.get(
        jvm.java.net.URI("file:///"), spark._jsc.hadoopConfiguration()
    )
    assert fs.getClass().getName() == FORKLESS
    # Hadoop's own callers cast the local one to LocalFileSystem: it is one.
    local = jvm.org.apache.hadoop.fs.FileSystem.getLocal(spark._jsc.hadoopConfiguration())
    assert local.getClass().getName() == FORKLESS


def test_it_leaves_the_permissions_and_checksums_hadoop_leaves(spark, tmp_path):
    ours = written_modes(spark, hadoop_fs(spark, FORKLESS), tmp_path / "ours")
    hadoops = written_modes(
        spark, hadoop_fs(spark, "org.apache.hadoop.fs.LocalFileSystem"), tmp_path / "hadoop"
    )
    assert ours == hadoops
    assert ours["private"] == 0o600 and ours["offsets/.0.crc"] == ours["offsets/0"]
