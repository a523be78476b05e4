package io.stedi.hadoop;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermissions;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.io.nativeio.NativeIO;

/**
 * Hadoop's local file system (checksums included), setting a file's permissions through
 * java.nio rather than by forking {@code chmod}.
 *
 * <p>Without Hadoop's native library, which no registry serves here, every file Hadoop
 * creates is followed by a forked {@code chmod}: about 8 processes a second for a trickle
 * through make run's four queries (each checkpoint file and its .crc), some 0.05 of a core.
 * The permissions are the same; only the sticky bit, which java.nio cannot set and Spark
 * never asks for, still goes to Hadoop's own way.
 *
 * <p>bin/local-fs puts it on a local driver's class path as {@code fs.file.impl}.
 */
public class ForklessLocalFileSystem extends LocalFileSystem {
  public ForklessLocalFileSystem() {
    super(new Raw());
  }

  static final class Raw extends RawLocalFileSystem {
    @Override
    public void setPermission(Path path, FsPermission permission) throws IOException {
      if (NativeIO.isAvailable() || permission.getStickyBit()) {
        super.setPermission(path, permission);
        return;
      }
      String symbolic =
          permission.getUserAction().SYMBOL
              + permission.getGroupAction().SYMBOL
              + permission.getOtherAction().SYMBOL;
      Files.setPosixFilePermissions(
          pathToFile(path).toPath(), PosixFilePermissions.fromString(symbolic));
    }
  }
}
