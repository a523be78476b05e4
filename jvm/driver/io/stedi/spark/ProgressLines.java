package io.stedi.spark;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.streaming.StateOperatorProgress;
import org.apache.spark.sql.streaming.StreamingQueryListener;
import org.apache.spark.sql.streaming.StreamingQueryProgress;

/**
 * One line per micro-batch of every streaming query of the driver, on standard output:
 *
 * <pre>[name] batch 7: 40 rows in, 12.5 rows/s, 321 ms, 8 state rows, 3 dead letters</pre>
 *
 * <p>After the state rows come the numeric fields of the batch's observed metrics ({@code
 * Dataset.observe}), summed by name across observations, with underscores read as spaces; a field
 * whose name starts with an underscore is not shown. The benchmark parses these lines: keep the
 * fields up to the state rows and their order.
 *
 * <p>Registered by {@code spark.sql.streaming.streamingQueryListeners} (bin/submit): the scripts
 * carry no progress code of their own.
 */
public class ProgressLines extends StreamingQueryListener {
  /** A terminated event carries the query's id only. */
  private final Map<UUID, String> names = new ConcurrentHashMap<>();

  @Override
  public void onQueryStarted(QueryStartedEvent event) {
    names.put(event.runId(), String.valueOf(event.name()));
    print(String.format("[%s] started (id %s)", event.name(), event.id()));
  }

  @Override
  public void onQueryProgress(QueryProgressEvent event) {
    print(line(event.progress()));
  }

  @Override
  public void onQueryTerminated(QueryTerminatedEvent event) {
    String how = event.exception().isDefined() ? "failed: " + event.exception().get() : "stopped";
    print(String.format("[%s] %s", names.remove(event.runId()), how));
  }

  public static String line(StreamingQueryProgress progress) {
    long stateRows = 0;
    for (StateOperatorProgress operator : progress.stateOperators()) {
      stateRows += operator.numRowsTotal();
    }
    Long duration = progress.durationMs().get("triggerExecution");
    StringBuilder line =
        new StringBuilder(
            String.format(
                Locale.ROOT,
                "[%s] batch %d: %d rows in, %.1f rows/s, %d ms, %d state rows",
                progress.name(),
                progress.batchId(),
                progress.numInputRows(),
                progress.processedRowsPerSecond(),
                duration == null ? 0 : duration,
                stateRows));
    for (Map.Entry<String, Long> metric : observed(progress).entrySet()) {
      line.append(", ").append(metric.getValue()).append(' ').append(metric.getKey());
    }
    return line.toString();
  }

  /** The observed numbers by name (underscores as spaces), in the order of their first field. */
  static Map<String, Long> observed(StreamingQueryProgress progress) {
    Map<String, Long> sums = new LinkedHashMap<>();
    for (Row row : progress.observedMetrics().values()) {
      String[] names = row.schema().fieldNames();
      for (int i = 0; i < names.length; i++) {
        if (!names[i].startsWith("_") && row.get(i) instanceof Number number) {
          sums.merge(names[i].replace('_', ' '), number.longValue(), Long::sum);
        }
      }
    }
    return sums;
  }

  /** One println each, so that lines from several queries never interleave. */
  private static void print(String line) {
    System.out.println(line);
    System.out.flush();
  }
}
