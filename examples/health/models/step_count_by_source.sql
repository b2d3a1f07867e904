SELECT
    source_name,
    date_trunc('hour', start_date) AS event_timestamp,
    max(creation_date) AS created_at,
    avg(value) AS value_avg,
    sum(value) AS value_sum,
    count(value) AS value_count
FROM steps
GROUP BY source_name, date_trunc('hour', start_date)
