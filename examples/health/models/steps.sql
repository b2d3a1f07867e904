SELECT
    source_name,
    source_version,
    unit,
    creation_date,
    start_date,
    end_date,
    CAST(value AS DOUBLE) AS value
FROM health
WHERE type = 'HKQuantityTypeIdentifierStepCount'
